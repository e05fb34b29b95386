"""Entry points as users run them: cluster.yaml for `ray up`, and `ray job submit` of
jobs/distill.py against a real local Ray head with its dashboard, job server and token
authentication; ensure_ray beside that head."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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


def test_cluster_yaml_starts_every_node_with_token_auth() -> None:
    """The job agent listens on each node's IP: without token auth anyone in the security
    group could submit code (ShadowRay, CVE-2023-48022)."""
    text = (ROOT / "cluster.yaml").read_text()
    raw = yaml.safe_load(text)
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in raw[key] if "ray start" in c]
        assert starts, f"cluster.yaml: {key} has no `ray start`"
        for cmd in starts:
            assert "RAY_AUTH_MODE=token" in cmd.split("ray start")[0].split(), \
                f"cluster.yaml: {key}: `{cmd}` starts Ray without RAY_AUTH_MODE=token"
    # The token reaches the nodes as a file from outside the repository, never in it.
    sources = [local for remote, local in raw.get("file_mounts", {}).items() if remote.endswith("/.ray/auth_token")]
    assert sources, "cluster.yaml: file_mounts has no <home>/.ray/auth_token for the nodes"
    for local in sources:
        path = Path(os.path.expanduser(local)).resolve()
        assert path.is_absolute() and ROOT not in path.parents, f"cluster.yaml: the token comes from {local}"
    for needle in ("RAY_AUTH_MODE=disabled", "RAY_AUTH_TOKEN="):
        assert needle not in text, f"cluster.yaml holds {needle}"


@pytest.mark.parametrize("value", ["0", "false", "False", "no"])
def test_ensure_ray_refuses_train_v1(monkeypatch: pytest.MonkeyPatch, value: str, no_local_ray: None) -> None:
    import ray

    from recdistill.ray_env import ensure_ray

    assert not ray.is_initialized()  # else ensure_ray returns before its checks
    monkeypatch.setenv("RAY_TRAIN_V2_ENABLED", value)
    with pytest.raises(RuntimeError, match=f"RAY_TRAIN_V2_ENABLED='{value}'.*Train V2"):
        ensure_ray()
    assert not ray.is_initialized()


def test_quiet_train_worker_quiets_trains_report_logger_and_ray_datas_progress_notice() -> None:
    import logging

    from ray.data._internal import progress  # warns once per process that the bars are off
    from ray.train.v2._internal.execution import context  # the module whose logger it is

    from recdistill.ray_env import quiet_train_worker

    context.logger.setLevel(logging.NOTSET)
    progress.logger.setLevel(logging.NOTSET)
    quiet_train_worker()
    assert context.logger.level == logging.WARNING, context.logger.name
    assert progress.logger.level == logging.ERROR, progress.logger.name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Joins the head as `RAY_ADDRESS=auto recdistill run` does on a laptop whose
# ~/.ray/auth_token made `ray start` turn token auth on: RAY_AUTH_MODE is not set.
JOIN = """
import ray
from recdistill.ray_env import ensure_ray
ensure_ray()
print("joined", ray.get_runtime_context().gcs_address)
"""

# A second local Ray beside the head: its processes must find their own cluster when Ray
# calls the State API without an address (Train's placement-group cleaner does).
BESIDE = """
import json, os, time, warnings
import ray
from recdistill.ray_env import actor_restarted, ensure_ray
t0 = time.perf_counter()
ensure_ray(num_cpus=1)
t1 = time.perf_counter()

@ray.remote(num_cpus=0)
class Probe:
    def look(self):
        from ray._private.services import canonicalize_bootstrap_address_or_die  # the State API's lookup
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            restarted = actor_restarted()
        return {"found": canonicalize_bootstrap_address_or_die(None), "restarted": restarted,
                "warnings": [str(w.message) for w in caught],
                "watcher": os.environ.get("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"),
                "data_log": os.environ.get("RAY_DATA_LOG_LEVEL")}

seen = ray.get(Probe.remote().look.remote())
print(json.dumps({**seen, "own": ray.get_runtime_context().gcs_address, "driver_address": os.environ.get("RAY_ADDRESS"),
                  "init_s": round(t1 - t0, 1), "probe_s": round(time.perf_counter() - t1, 1)}))
"""


@pytest.mark.timeout(400)
def test_ray_job_submit_smoke_test(tmp_path: Path, no_local_ray: None) -> None:
    # The head authenticates as cluster.yaml's nodes do: token mode, the token in a file.
    token = tmp_path / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_ADDRESS")}
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    # The head's own Ray temp dir: `RAY_ADDRESS=auto` joins the cluster the temp dir's
    # ray_current_cluster names, which any `ray start` on this host writes, the other xdist
    # worker's two-node test's included (CI joined that one). Under /tmp: Ray's socket paths
    # under a deep checkout's .tmp would pass Unix's 107-byte limit.
    env["RAY_TMPDIR"] = ray_tmp = tempfile.mkdtemp(prefix="rj", dir="/tmp")
    gcs, dash = _free_port(), _free_port()
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}", "--num-cpus=2",
         "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
         # not the agent's default port, which another Ray on this host may hold (its job
         # agent then never comes up: every submit says "No available agent")
         f"--dashboard-agent-listen-port={_free_port()}",
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
        anonymous = subprocess.run([RAY, "job", "list", "--address", address], capture_output=True, text=True,
                                   env={**env, "RAY_AUTH_MODE": "disabled"})
        assert anonymous.returncode != 0, "the job server answered a client without the token"
        assert "Unauthorized" in anonymous.stdout + anonymous.stderr, anonymous.stdout[-2000:] + anonymous.stderr[-2000:]
        # One job, as users submit it. Two jobs of one teacher key at once (one trains, the
        # other waits on its lease and reads its signals) are tested below the job layer:
        # processes racing for a lease (tests/signals/test_store_lifecycle.py) and a run
        # that waits on another's lease and reuses what it commits (test_committee_run.py).
        out = tmp_path / "run"
        job = subprocess.run(
            [RAY, "job", "submit", "--address", address, "--working-dir", str(ROOT), "--",
             sys.executable, "jobs/distill.py", "--config", "jobs/configs/demo.yaml", "--smoke-test",
             f"run.dir={out}", f"platform.signal_store={tmp_path / 'store'}",
             # the serving cost is checked in tests/test_distributed.py; here the job path is
             "run.serving=off", "tracking.wandb=disabled"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        assert job.returncode == 0 and "succeeded" in job.stdout, job.stdout[-6000:]
        results = json.loads((out / "results.json").read_text())
        assert results["engine"] == "ray" and results["platform"]["teacher_steps"] > 0
        assert [s["name"] for s in results["students"]] == ["decoupled", "single"]
        assert 0.5 < results["teacher"]["auc"] <= 1
        # the driver left with its run: it did not start or join Ray again on its way out
        assert job.stdout.count("Connecting to existing Ray cluster") == 0, job.stdout[-4000:]

        # A laptop user's driver joining a `ray start` head that has token auth on.
        auto = {k: v for k, v in env.items() if k != "RAY_AUTH_MODE"}
        joined = subprocess.run([sys.executable, "-c", JOIN], env={**auto, "RAY_ADDRESS": "auto"},
                                capture_output=True, text=True, timeout=120)
        assert joined.returncode == 0 and f":{gcs}\n" in joined.stdout, joined.stdout[-2000:] + joined.stderr[-3000:]
        # A plain local run beside the head: a second local Ray on this host.
        local = {k: v for k, v in auto.items() if k != "RAY_AUTH_TOKEN_PATH"}
        beside = subprocess.run([sys.executable, "-c", BESIDE], env=local, capture_output=True, text=True, timeout=120)
        assert beside.returncode == 0, beside.stdout[-2000:] + beside.stderr[-3000:]
        seen = json.loads(beside.stdout.strip().splitlines()[-1])
        assert seen["found"] == seen["own"] and not seen["own"].endswith(f":{gcs}"), seen
        assert seen["watcher"] == "0" and seen["data_log"] == "WARNING" and seen["driver_address"] is None, seen
        assert seen["restarted"] is False and seen["warnings"] == [], seen
    finally:
        os.killpg(head.pid, signal.SIGTERM)  # --block: the head takes its processes down with it
        try:
            # `ray start --block` can sit 60 s and more on SIGTERM (measured); the group's
            # processes are this test's own, so a short grace, then SIGKILL
            head.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)  # the head's session: its logs, its address
