"""Every command the README shows runs as shown.

The lines of the README's "Commands" block are read from the README itself; each has a check
here that runs it against a fresh database and a private broker, as an operator would type it
(long-running services are started, checked and stopped with SIGTERM). A line with no check
fails the test, so a command added to the README gets one. The two commands at the top are run
elsewhere: ``make test`` by CI (``.ci/run``), ``make demo`` (``anxin demo``) by
``tests/demo/test_demo.py``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from detectors.waist import WAIST_MODEL
from detectors.wrist import WRIST_MODEL, WRIST_MODEL_RATE_HZ, model_name
from tests.services import ROOT, PrivateBroker, free_port, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = ROOT / "README.md"
BIN = Path(sys.executable).parent

TRAIN_WAIST = "detectors.training.train_waist"


def readme_commands() -> list[str]:
    text = README.read_text(encoding="utf-8")
    block = text[text.index("## Commands") :]
    block = block[block.index("```sh") + 5 : block.index("```", block.index("```sh") + 5)]
    return [line.split("  #", 1)[0].strip() for line in block.strip().splitlines()]


def _argv(line: str) -> list[str]:
    argv = shlex.split(line)
    assert argv[0].startswith(".venv/bin/"), f"README commands run from the venv: {line}"
    return [str(BIN / argv[0].removeprefix(".venv/bin/")), *argv[1:]]


@pytest.fixture(scope="module")
def broker() -> Iterator[PrivateBroker]:
    b = PrivateBroker()
    b.start()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def env(db_url: str, broker: PrivateBroker, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "ANXIN_DB__URL": db_url,
        "ANXIN_MQTT__URL": broker.url,
        "ANXIN_INGEST__METRICS_PORT": str(free_port()),
        "ANXIN_API__PORT": str(free_port()),
        "ANXIN_MQTT__CLIENT_ID": f"readme-{tmp_path.name}",
    }


def _run(line: str, env: dict[str, str], timeout: float = 300) -> str:
    done = subprocess.run(
        _argv(line), cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert done.returncode == 0, f"{line}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout + done.stderr


def _run_stdout(line: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        _argv(line), cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{line}\n{done.stderr[-2000:]}"
    return done.stdout


def _serve(line: str, env: dict[str, str], log: Path, ready: Callable[[], bool]) -> None:
    """Start a service as the README says, wait until it is ready, stop it with SIGTERM."""
    with log.open("wb") as out:
        proc = subprocess.Popen(_argv(line), cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        wait_until(lambda: ready() or proc.poll() is not None, 60, f"{line} to be ready")
        assert proc.poll() is None, f"{line} exited: {log.read_text()[-2000:]}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    # uvicorn re-raises SIGTERM after its graceful shutdown: the default exit of a signal.
    assert proc.returncode in (0, -signal.SIGTERM), (
        f"{line} did not stop: {log.read_text()[-2000:]}"
    )


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 - a local test URL
            return bool(r.status == 200)
    except OSError:
        return False


def check(line: str, env: dict[str, str], tmp: Path) -> None:
    args = shlex.split(line)[1:]
    log = tmp / "service.log"
    if args[:2] == ["db", "upgrade"]:
        out = _run(line, env).lower()
        assert "native" in out or "timescale" in out, out
    elif args[:2] == ["db", "info"]:
        _run(".venv/bin/anxin db upgrade", env)
        assert "mode" in _run(line, env).lower()
    elif args[0] == "ingest":  # one process, or either lane's
        _serve(line, env, log, lambda: log.exists() and b"subscribed to" in log.read_bytes())
    elif args[:2] == ["alerts", "worker"]:
        _run(".venv/bin/anxin db upgrade", env)
        _serve(line, env, log, lambda: log.exists() and b"worker started" in log.read_bytes())
    elif args == ["api"]:
        port = env["ANXIN_API__PORT"]
        _serve(line, env, log, lambda: _http_ok(f"http://127.0.0.1:{port}/health"))
    elif args[:2] == ["tokens", "create"]:
        _run(".venv/bin/anxin db upgrade", env)
        out = _run(line, env)
        assert re.search(r"[A-Za-z0-9_-]{20,}", out), out
    elif args[0] == "simulate":
        # Real time as shown; the ingester runs meanwhile and stores what the fleet sends.
        with log.open("wb") as out:
            ingest = subprocess.Popen(_argv(".venv/bin/anxin ingest"), cwd=ROOT, env=env,
                                      stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            wait_until(lambda: b"subscribed to" in log.read_bytes(), 60, "the ingester")
            _run(line, env, timeout=180)
            devices, seconds = (
                int(args[args.index("--devices") + 1]),
                int(args[args.index("--seconds") + 1]),
            )
            with psycopg.connect(env["ANXIN_DB__URL"]) as conn:

                def stored() -> int:
                    row = conn.execute("SELECT count(*) FROM vitals").fetchone()
                    conn.commit()
                    return int(row[0]) if row else 0

                wait_until(lambda: stored() >= devices * seconds, 60, "the fleet's readings")
        finally:
            ingest.send_signal(signal.SIGTERM)
            ingest.wait(30)
    elif args[:2] == ["scenario", "list"]:
        out = _run(line, env)
        assert len(out.strip().splitlines()) == 12 and "bad-firmware" in out, out
    elif args[:2] == ["scenario", "run"]:
        # Against the running services, as the line says: the ingester runs meanwhile.
        _run(".venv/bin/anxin db upgrade", env)
        with log.open("wb") as out:
            ingest = subprocess.Popen(_argv(".venv/bin/anxin ingest"), cwd=ROOT, env=env,
                                      stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            wait_until(lambda: b"subscribed to" in log.read_bytes(), 60, "the ingester")
            report = _run(line, env)
            assert "result: PASS" in report and "DIFFERS" not in report, report
        finally:
            ingest.send_signal(signal.SIGTERM)
            ingest.wait(30)
    elif args[0] == "load":
        _run(".venv/bin/anxin db upgrade", env)
        out = _run(line, env, timeout=240)
        sent = re.search(r"sent (\d+) messages .* broker acknowledged (\d+)", out)
        assert sent is not None and sent[1] == sent[2] and int(sent[1]) > 0, out
    elif args[:2] == ["devices", "add"]:
        _run(".venv/bin/anxin db upgrade", env)
        out = _run(line, env)
        assert args[2] in out
    elif args[:2] == ["report", "monthly"]:
        _run(".venv/bin/anxin db upgrade", env)
        report = json.loads(_run_stdout(line, env))
        assert report["month"] == args[args.index("--month") + 1] and report["elders"] == 0
    elif args[:2] == ["detectors", "evaluate-falls"]:
        # tests/detectors/test_evaluate_cli.py reads these lines from the README itself: the
        # --shipped ones run as written; cross-validation (minutes each) is parsed there.
        cli_test = ROOT / "tests" / "detectors" / "test_evaluate_cli.py"
        assert "README.md" in cli_test.read_text(encoding="utf-8")
    elif args[0] == "-m" and args[1] in ("detectors.training.train_wrist", TRAIN_WAIST):
        # As shown, writing the model elsewhere: it must be the shipped model (training is
        # seeded: anyone can rebuild what ships). The same trees, split on the same features,
        # with numbers equal to 6 significant digits: another CPU's floating point may round
        # the 7th differently (a split at 14.589273 rebuilt as 14.5892739).
        out = tmp / "wrist-model.json"
        _run(f"{line} --out {out}", env, timeout=600)
        rate = int(args[args.index("--rate") + 1]) if "--rate" in args else WRIST_MODEL_RATE_HZ
        base = WAIST_MODEL if args[1] == TRAIN_WAIST else WRIST_MODEL
        shipped = ROOT / "detectors" / "models" / f"{model_name(rate, base)}.json"
        _assert_same_model(json.loads(out.read_text()), json.loads(shipped.read_text()))
    elif args[0].startswith("bench/"):
        pytest.skip("benchmarks run for minutes; tests/test_readme.py::test_benchmarks_start")
    else:
        pytest.fail(f"the README shows {line!r} and no test runs it: add a check here")


def _assert_same_model(built: object, shipped: object, where: str = "model") -> None:
    """Equal JSON, numbers to a relative 1e-6 (the rest exactly)."""
    if isinstance(shipped, dict):
        assert isinstance(built, dict) and built.keys() == shipped.keys(), where
        for key, value in shipped.items():
            _assert_same_model(built[key], value, f"{where}.{key}")
    elif isinstance(shipped, list):
        assert isinstance(built, list) and len(built) == len(shipped), where
        for i, (b, s) in enumerate(zip(built, shipped, strict=True)):
            _assert_same_model(b, s, f"{where}[{i}]")
    elif isinstance(shipped, float) and not isinstance(shipped, bool):
        assert isinstance(built, int | float), where
        assert math.isclose(built, shipped, rel_tol=1e-6, abs_tol=1e-9), (where, built, shipped)
    else:
        assert built == shipped, (where, built, shipped)


@pytest.mark.parametrize("line", readme_commands())
def test_readme_command_runs_as_shown(line: str, env: dict[str, str], tmp_path: Path) -> None:
    check(line, env, tmp_path)


def test_the_readme_shows_commands() -> None:
    assert len(readme_commands()) >= 8


@pytest.mark.parametrize(
    "argv",
    [
        ["bench/ingest.py", "--devices", "20", "--seconds", "2", "--naive-seconds", "1",
         "--repeat", "1", "--live-devices", "20", "--live-seconds", "2", "--publishers", "1"],
        ["bench/detectors.py", "--quick"],
        ["bench/partitioned.py", "--devices", "20", "--seconds", "2", "--live-seconds", "1",
         "--runs", "1"],
    ],
    ids=["ingest", "detectors", "partitioned"],
)  # fmt: skip
def test_benchmarks_start(argv: list[str]) -> None:
    """The benchmark scripts, on a small load (their full runs take minutes)."""
    done = subprocess.run(
        [sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "msg/s" in done.stdout or "per CPU-s" in done.stdout
