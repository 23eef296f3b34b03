"""The doctors' per-elder NEWS2 settings as the vitals stage scores with them.

:class:`News2SettingsCache` reads the stored settings (devices/news2_settings.py) at the first
call and keeps them as one :class:`detectors.news2_charts.News2Table` (arrays per chart, a row per
distinct setting), so scoring stays one vectorised pass whatever the number of elders with
settings of their own. Every ``refresh_s`` it reads the table's stamp (its row count and newest
change: one cheap query) and reads the settings again only when the stamp moved, so a change
made through the API is scored with within seconds. A stored row the detector's rules refuse
(written by hand, say) is logged and that elder is scored on the RCP chart.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Sequence
from typing import Any

from detectors.news2_charts import DEFAULT_SETTINGS, Bands, News2Settings, News2Table, chart_of
from devices.news2_settings import StoredNews2

log = logging.getLogger(__name__)

Stamp = tuple[int, Any]


def settings_of(stored: StoredNews2) -> News2Settings:
    """The detector's settings of one stored row (each chart keeps the RCP chart's resolution).

    Raises:
        ValueError, KeyError: the row breaks the charts' rules or names an unknown chart.
    """
    charts: dict[str, Bands] = {}
    for name, (starts, scores) in stored.bands.items():
        default = chart_of(DEFAULT_SETTINGS, name)
        charts[name] = Bands(starts, scores, resolution=default.resolution)
    return dataclasses.replace(DEFAULT_SETTINGS, spo2_scale=stored.spo2_scale, **charts)


class News2SettingsCache:
    """The per-elder NEWS2 settings in force, read again when they changed.

    Args:
        read_stamp: Reads the settings' stamp (count, newest change).
        read_all: Reads every active elder's stored settings.
        refresh_s: How often the stamp is read.
    """

    def __init__(
        self,
        read_stamp: Callable[[], Stamp],
        read_all: Callable[[], Sequence[StoredNews2]],
        refresh_s: float,
    ) -> None:
        self._read_stamp = read_stamp
        self._read_all = read_all
        self._refresh_ms = refresh_s * 1000
        self._stamp: Stamp | None = None
        self._checked_ms: int | None = None
        self.table = News2Table.of({})

    def current(self, now_ms: int) -> News2Table:
        """The table to score with at ``now_ms`` (read again first when it is due and changed).

        A failed read keeps the table in force and is tried again after ``refresh_s``.
        """
        if self._checked_ms is not None and now_ms - self._checked_ms < self._refresh_ms:
            return self.table
        self._checked_ms = now_ms
        try:
            stamp = self._read_stamp()
            if stamp != self._stamp:
                self.table = self._build(self._read_all())
                self._stamp = stamp
        except Exception as exc:  # scoring goes on with the settings in force
            log.warning("NEWS2 settings not read (%s); the ones in force stay", exc)
        return self.table

    @staticmethod
    def _build(rows: Sequence[StoredNews2]) -> News2Table:
        by_resident: dict[str, News2Settings] = {}
        for row in rows:
            try:
                by_resident[str(row.resident_id)] = settings_of(row)
            except (ValueError, KeyError) as exc:
                log.warning(
                    "NEWS2 settings of resident %s not used (the RCP chart instead): %s",
                    row.resident_id,
                    exc,
                )
        log.info("NEWS2 settings of %d elders in force", len(by_resident))
        return News2Table.of(by_resident)
