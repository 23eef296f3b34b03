"""Thresholds and windows of the waist fall detector (:class:`FallConfig`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FallConfig:
    """Thresholds and windows of the fall detector.

    The defaults were chosen by subject-wise cross-validation on SisFall (see
    ``docs/detection.md``); ``intensity_g`` is the main threshold (the trade-off curve sweeps it).

    Attributes:
        candidate_g: Magnitude in g that opens a candidate impact.
        peak_g: Smallest peak magnitude in g for a fall.
        intensity_g: Smallest mean ``| |a| - 1 |`` over 1 s around the impact, in g.
        orientation_deg: Smallest change of the gravity direction, before vs after, in degrees.
        stillness_g: Largest standard deviation of ``|a|`` after the impact, in g.
        merge_s: Seconds after the first crossing searched for the impact peak.
        pre_start_s: Start of the "before" window, seconds before the impact.
        pre_end_s: End of the "before" window, seconds before the impact.
        post_start_s: Start of the "after" window, seconds after the impact.
        post_end_s: End of the "after" window, seconds after the impact; the suspected finding
            comes this long after the impact (plus up to one burst).
        confirm_s: Length of the confirmation window after the impact, in seconds.
        recover_s: Seconds of signal used to recognise recovery.
        recover_deg: Gravity direction within this angle of the one before the fall counts as
            back on one's feet.
        recover_std_g: Standard deviation of ``|a|`` above this counts as moving (walking).
        still_g: Standard deviation of ``|a|`` below this at the end of the window counts as
            lying still.
        no_data_grace_s: After the window ends, a silent device is confirmed after this delay.
        max_burst_s: Longest burst accepted in one call, in seconds (sizes the ring buffer).
        max_gap_ms: A burst whose start differs from the expected one by more than this
            restarts the device's buffer (a gap or a clock jump).
    """

    candidate_g: float = 1.5
    peak_g: float = 1.5
    intensity_g: float = 0.25
    orientation_deg: float = 40.0
    stillness_g: float = 0.5
    merge_s: float = 1.0
    pre_start_s: float = 3.5
    pre_end_s: float = 1.5
    post_start_s: float = 1.0
    post_end_s: float = 2.5
    confirm_s: float = 30.0
    recover_s: float = 2.0
    recover_deg: float = 30.0
    recover_std_g: float = 0.1
    still_g: float = 0.05
    no_data_grace_s: float = 5.0
    max_burst_s: float = 5.0
    max_gap_ms: float = 500.0

    def __post_init__(self) -> None:
        if not 0 < self.pre_end_s < self.pre_start_s:
            raise ValueError(
                f"FallConfig pre window ({self.pre_start_s}, {self.pre_end_s}) s is invalid; "
                "expected 0 < pre_end_s < pre_start_s."
            )
        if not 0 <= self.post_start_s < self.post_end_s:
            raise ValueError(
                f"FallConfig post window ({self.post_start_s}, {self.post_end_s}) s is invalid; "
                "expected 0 <= post_start_s < post_end_s."
            )
        if self.candidate_g > self.peak_g:
            raise ValueError(
                f"FallConfig candidate_g={self.candidate_g} is above peak_g={self.peak_g}; "
                "expected candidate_g <= peak_g, or falls with smaller peaks are never seen."
            )

    def samples(self, seconds: float, rate_hz: int) -> int:
        """Number of samples in ``seconds`` at ``rate_hz`` (rounded)."""
        return round(seconds * rate_hz)

    def ring_len(self, rate_hz: int) -> int:
        """Ring buffer length in samples: the analysis window plus the longest burst."""
        return self.samples(
            self.pre_start_s + self.merge_s + self.post_end_s + self.max_burst_s, rate_hz
        )
