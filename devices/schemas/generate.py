"""Write ``devices/schemas/{name}.schema.json`` from :func:`devices.protocol.json_schemas`.

Usage::

    python -m devices.schemas.generate            # rewrite the files
    python -m devices.schemas.generate --check    # exit 1 if a file differs

The files are pretty-printed with sorted keys and a trailing newline, so a change to a
payload type shows up as a readable diff.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from devices.protocol import json_schemas

SCHEMA_DIR = Path(__file__).resolve().parent


def render(schema: dict[str, Any]) -> str:
    """The text of one schema file: two-space indent, sorted keys, trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def expected_files() -> dict[str, str]:
    """File name -> text, for every payload kind (telemetry, event, status, command)."""
    return {f"{name}.schema.json": render(schema) for name, schema in json_schemas().items()}


def stale_files(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of the schema files that are missing or differ from the payload types."""
    stale = []
    for name, text in expected_files().items():
        path = directory / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return stale


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file into ``directory``; returns the paths written."""
    written = []
    for name, text in expected_files().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="only report stale files, exit 1 if any"
    )
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            sys.stderr.write(
                f"{name} differs from devices.protocol; run python -m devices.schemas.generate\n"
            )
        return 1 if stale else 0
    for path in write():
        sys.stdout.write(f"wrote {path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
