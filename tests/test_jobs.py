"""Entry points as users run them: cluster.yaml for `ray up`, and `ray job submit` of
jobs/distill.py against a real local Ray head with its dashboard and job server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))


def test_cluster_yaml_is_a_valid_launcher_config() -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    raw = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    for key in ("cluster_name", "provider", "auth", "available_node_types", "head_node_type",
                "setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in raw, key
    validate_config(prepare_config(raw))  # the schema check `ray up` runs
    types = raw["available_node_types"]
    assert raw["head_node_type"] in types
    assert any("recdistill" in c for c in raw["setup_commands"])
    start = " ".join(raw["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start  # reached by port-forward only


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(400)
def test_ray_job_submit_smoke_test(tmp_path: Path) -> None:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    gcs, dash = _free_port(), _free_port()
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         "--disable-usage-stats"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        deadline = time.time() + 90
        while subprocess.run([RAY, "job", "list", "--address", address], env=env,
                             capture_output=True).returncode != 0:
            assert head.poll() is None, head.stdout.read() if head.stdout else "ray start exited"
            assert time.time() < deadline, "the job server did not come up in 90 s"
            time.sleep(1)
        out = tmp_path / "run"
        job = subprocess.run(
            [RAY, "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
             sys.executable, "jobs/distill.py", "--config", "jobs/configs/demo.yaml", "--smoke-test",
             f"run.dir={out}", f"platform.signal_store={tmp_path / 'store'}"],
            env=env, capture_output=True, text=True, timeout=300)
        assert job.returncode == 0, job.stdout[-4000:] + job.stderr[-4000:]
        assert "succeeded" in job.stdout + job.stderr
        results = json.loads((out / "results.json").read_text())
        assert results["engine"] == "ray"
        assert [s["name"] for s in results["students"]] == ["decoupled", "single"]
        assert results["platform"]["teacher_steps"] > 0
        assert 0.5 < results["teacher"]["auc"] <= 1
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: the head takes its processes down with it
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        # `ray start` leaves the head's address in Ray's temp dir, where later ray.init()
        # calls and Ray's State API would look for it; the head is gone, so remove it.
        current = Path(os.environ.get("RAY_TMPDIR", "/tmp")) / "ray" / "ray_current_cluster"
        if current.is_file() and f":{gcs}" in current.read_text():
            current.unlink()
