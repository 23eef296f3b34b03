"""Every scenario of the shipped library against one running deployment (the real Mosquitto
and PostgreSQL, ``anxin ingest`` and ``anxin alerts worker`` as processes, the demo's stand-in
for the 120 centre and the phones), all at once, each with elders and devices of its own; a
deliberately wrong expectation run by ``anxin scenario run`` as an engineer runs it, which must
exit non-zero and say what differed.

The scenarios play side by side in threads (the longest, in real time, about 70 s), so the
whole library costs about as much as its longest scenario.
"""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from simulators.runner import RunOptions, RunResult, run_scenario
from simulators.scenario import LIBRARY, library, load_scenario
from tests.services import IN_CI, ROOT
from tests.simulators.conftest import DATASETS, Deployment

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _datasets() -> Path:
    if not (DATASETS / "sisfall" / "SA01.npz").exists():
        reason = f"the datasets are not at {DATASETS} (fall-confirmed replays a SisFall recording)"
        if IN_CI:
            pytest.fail(f"{reason}; in CI they must be there", pytrace=False)
        pytest.skip(reason)
    return DATASETS


def _wrong_expectation(tmp_path: Path) -> Path:
    """The Last Will scenario expecting 120 to be called and the alert already resolved."""
    data = yaml.safe_load((LIBRARY / "device-offline-lwt.yaml").read_text())
    data["expect"]["alerts"][0].update(state="resolved", told=["dispatch120"])
    data["expect"]["never"] = [{"kind": "device_offline"}]
    path = tmp_path / "wrong.yaml"
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


def _cli(deployment: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        **deployment.env,
        "ANXIN_MQTT__CLIENT_ID": "scenario-cli",
        "ANXIN_INGEST__REGISTRY_REFRESH_S": "1",
    }
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "scenario", "run", *args, "--phones", deployment.phones],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_every_library_scenario_passes_and_a_wrong_expectation_fails(
    deployment: Deployment, tmp_path: Path
) -> None:
    data = _datasets()
    wrong = _wrong_expectation(tmp_path)
    options = RunOptions(data_dir=data, phones=deployment.phones)
    with ThreadPoolExecutor(max_workers=len(library()) + 1) as pool:
        cli = pool.submit(_cli, deployment, str(wrong))
        futures = {
            path.stem: pool.submit(
                run_scenario, deployment.settings, load_scenario(path), options, title=path.stem
            )
            for path in library()
        }
        results: dict[str, RunResult] = {name: f.result() for name, f in futures.items()}
        wrong_run = cli.result()

    reports = "\n\n".join(r.report for r in results.values())
    print(reports)
    failed = [name for name, r in results.items() if not r.passed]
    assert not failed, f"scenarios that differ: {failed}\n\n{reports}"

    # The gateway path, end to end: the hub's bed sensor and SOS button reached the database
    # through the hub's topics, the reading for a device not bound to it was dead-lettered,
    # and the hub's Last Will marked it offline.
    gw = results["gateway-three-devices"].observed
    assert gw.stored["bed-guo", "bed"] >= 3
    assert gw.stored["btn-guo", "events"] == 1
    assert gw.dead_letters["wb-other", "device_mismatch"] == 1
    kinds = {(a.kind, a.elder, a.device) for a in gw.alerts}
    assert ("sos", "guo", "btn-guo") in kinds
    assert ("device_offline", "guo", "hub-guo") in kinds
    # The 120 centre's stand-in received the pushes of the SOS scenarios with the elder's name.
    pushed = {p.elder_name for p in deployment.receiver.pushes()}
    assert {"张秀英", "郭兰英"} <= pushed

    # The wrong expectation: exit status 1 and a report that names each difference.
    assert wrong_run.returncode == 1, wrong_run.stdout + wrong_run.stderr
    out = wrong_run.stdout
    assert "result: FAIL (2 of 2 checks differ)" in out, out
    assert (
        "DIFFERS  a device_offline alert for ma (resolved): state is open, expected resolved; "
        "told ['child', 'operator'], expected ['dispatch120']" in out
    ), out
    assert "DIFFERS  must not happen: device_offline for ma (open, medium)" in out, out
