"""The README's ``anxin detectors evaluate-falls`` command lines work as written.

The ``--shipped`` lines run for real (about 20 s each on the development data); the
cross-validation lines (minutes) are checked to parse with the command's own parser.
"""

from __future__ import annotations

import re
import shlex
import subprocess

import pytest

from detectors.evaluation import build_parser
from tests.services import IN_CI, ROOT

pytestmark = [pytest.mark.slow]

LAST_LINES = (
    r"sensitivity \d+\.\d\d %",
    r"specificity \d+\.\d\d %",
    r"confirmed false alarms per hour \d+\.\d\d",
    r"median delay impact -> FALL_SUSPECTED \d+\.\d\d s",
)


def _readme_lines() -> list[str]:
    text = (ROOT / "README.md").read_text("utf-8")
    lines = [
        line.split("#", 1)[0].strip()
        for line in text.splitlines()
        if line.startswith(".venv/bin/anxin detectors evaluate-falls")
    ]
    assert lines, "the README shows no evaluate-falls command"
    return lines


def _data_or_skip(line: str) -> None:
    data = shlex.split(line)[shlex.split(line).index("--data") + 1]
    if not (ROOT / data).is_dir():
        if IN_CI:
            pytest.fail(f"{data} missing; in CI the datasets must be there", pytrace=False)
        pytest.skip(f"{data} not found")


def test_every_readme_evaluate_falls_line_parses() -> None:
    for line in _readme_lines():
        args = build_parser().parse_args(shlex.split(line)[3:])
        assert args.data.name in ("sisfall", "wrist")


@pytest.mark.parametrize("line", [x for x in _readme_lines() if "--shipped" in x])
def test_readme_shipped_command_runs_as_written_and_ends_with_the_four_figures(line: str) -> None:
    _data_or_skip(line)
    run = subprocess.run(
        shlex.split(line), cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-2000:]
    last = run.stdout.strip().splitlines()[-4:]
    for got, pattern in zip(last, LAST_LINES, strict=True):
        assert re.fullmatch(pattern, got), f"{got!r} does not match {pattern!r}"
    sens = float(last[0].split()[1])
    assert sens > 50.0  # the shipped detector finds falls on its own development data
    # Every confirmed false alarm on joined activity is listed with where its impact lies.
    out = run.stdout.splitlines()
    head = next(x for x in out if x.startswith("confirmed false alarms on joined activity: "))
    listed = out[out.index(head) + 2 :][: int(head.split(": ")[1].split()[0])]
    assert all(re.fullmatch(r"  - \S+/\S+: impact \d+\.\d s into \S+ .*", x) for x in listed)
    assert not out[out.index(head) + 2 + len(listed)].startswith("  - ")
