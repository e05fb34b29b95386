"""What every Ray Train loop (teacher, student group, online, transfer) does on its worker:
the prologue that readies it, checkpoints through ``ray.train.report`` and
``ray.train.get_checkpoint``, the final report, and the fault-injection test hooks.

Checkpoints and reports follow Train's contract: every rank calls ``report`` at the same
steps (the loops keep their cadence a function of the step count, which DDP keeps in
lockstep) and only rank 0 attaches a checkpoint.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from recdistill.config import ExperimentConfig, config_from_dict
from recdistill.models import FeatureSpec
from recdistill.data.tensors import from_table
from recdistill.train.checkpoint import STATE_FILE, load_dir, save_weights
from recdistill.train.evaluate import Evaluator, Validator, user_shard, validation_auc
from recdistill.train.plan import feature_spec, sequence_length

# A test hook that kills the worker process (a real crash, not an exception) once:
# "<role>:<step>:<marker file>", e.g. "teacher:5:/tmp/x"; several specs separated by ";"
# crash several workers of one run. The marker makes each fire once.
FAIL_ENV = "RECDISTILL_FAIL_ONCE"
# A test hook: windows whose signals the online teacher writes but never marks complete,
# as if it lagged behind or the hub lost them: "3,4".
DROP_ENV = "RECDISTILL_DROP_SIGNALS"
# A test hook: the online students kill the signal hub actor (Ray restarts it) once, while
# their wait for a window's signals is in flight: "<window>:<marker file>".
KILL_HUB_ENV = "RECDISTILL_KILL_HUB"
# Every test hook's variable: the driver forwards those it has set to the workers.
TEST_HOOKS = (FAIL_ENV, DROP_ENV, KILL_HUB_ENV)


@dataclass
class WorkerContext:
    """What a loop knows once its worker is set up (``worker_prologue``)."""

    cfg: ExperimentConfig
    schema: Any  # the log's ``LogSchema``
    spec: FeatureSpec  # the models' input features
    seq_len: int  # padded length of sequence features
    rank: int
    world: int
    threads: int  # torch intra-op threads on this worker
    device: torch.device
    saved: dict[str, Any] | None  # the latest checkpoint's payload; None on a fresh start

    @property
    def sparse_embeddings(self) -> bool:
        """Sparse embedding gradients, except for multi-GPU DDP: NCCL cannot all-reduce them."""
        return not (self.world > 1 and self.device.type == "cuda")


def worker_prologue(config: dict[str, Any]) -> WorkerContext:
    """Set up this Train worker for a loop: Train's report logging quieted, torch threads set,
    the config parsed (the loop config's "cfg", "schema" and "buckets"), the device picked
    and the run's latest checkpoint read."""
    import ray.train
    import ray.train.torch

    quiet_logs()
    cfg = config_from_dict(config["cfg"])
    schema, buckets = config["schema"], config["buckets"]
    ctx = ray.train.get_context()
    n = set_threads(cfg, int(config.get(NODE_SHARE, 1)))
    device = ray.train.torch.get_device()
    if device.type == "cuda":
        # a one-worker run is a plain DataParallelTrainer (``engine.trainer.trainer_class``),
        # which, unlike TorchTrainer, does not make the worker's GPU torch's current device
        torch.cuda.set_device(device)
    return WorkerContext(cfg, schema, feature_spec(schema, buckets), sequence_length(cfg), ctx.get_world_rank(),
                         ctx.get_world_size(), n, device, restore_checkpoint())


def shard_validator(config: dict[str, Any], schema: Any, seq_len: int, device: torch.device) -> Validator | None:
    """Validation AUC on this worker's shard of the valid split, merged across workers
    (None when the driver found the split empty and passed no "valid" dataset)."""
    import ray.train

    if not config.get("valid_rows"):
        return None
    shard = ray.train.get_dataset_shard("valid")
    return lambda models: validation_auc(models, (
        from_table(t, schema, seq_len).to(device)
        for t in shard.iter_batches(batch_size=16384, batch_format="pyarrow")))


# The part of a worker report that the driver forwards to the run's trackers as it comes
# (``engine.live``): small, namespaced by the loop's role.
LIVE = "live"

# In a report: whether the run trains on after it. Only such reports reach a Tune scheduler
# (``engine.trainer``): one that stopped a trial at its last report would cut it off before
# it scores the test split.
TRAINS_ON = "trains_on"
PLACEMENT_GROUP = "placement_group"  # in a report: the hex id of the run's worker group placement group

COLD_SUFFIX = "@cold"  # a model's figures on the cold users' test rows (``engine.cold``)


def slice_name(name: str, k: int) -> str:
    """A model's figures on the test rows of a committee's slice ``k`` (``data.expert_slices``)."""
    return f"{name}@slice{k}"

# The loop-config flag ``ray_trainer`` sets when every worker reads the whole test split
# (DDP on a log with users: GAUC needs each user's rows on one worker).
WHOLE_TEST = "test_whole"


def score_test(ctx: WorkerContext, config: dict[str, Any], models: dict[str, Any], negative_keep: dict[str, float],
               with_oracle: bool = False, slices: dict[str, list[int]] | None = None) -> Evaluator:
    """Every model of ``models`` (name → Ranker) on this worker's rows of the test split,
    merged across workers: AUC, LogLoss, calibration, the AUC's test-row bootstrap
    (``run.bootstrap`` replicates) and, where the log has users, GAUC. With ``with_oracle``,
    the log's true click probability is scored as "oracle" where it has one. Every rank calls it."""
    import ray.train

    from recdistill.data.tensors import COLD

    schema = ctx.schema
    user_col = schema.categorical.index(schema.user_field) if schema.user_field in schema.categorical else None
    cold = bool(config.get(COLD))  # the test split carries the cold-user column: each model on those rows too
    slices = slices or {}  # a committee's experts (and the teacher) also on the test rows of each slice named
    sliced = [slice_name(n, k) for n, ks in slices.items() for k in ks]
    names = (list(models) + [f"{n}{COLD_SUFFIX}" for n in models if cold] + sliced
             + (["oracle"] if with_oracle else []))
    keep = {**negative_keep, **{f"{n}{COLD_SUFFIX}": k for n, k in negative_keep.items()},
            **{slice_name(n, k): negative_keep[n] for n, ks in slices.items() for k in ks}}
    ev = Evaluator(names, keep, replicates=ctx.cfg.run.bootstrap, by_user=user_col is not None)
    whole = bool(config.get(WHOLE_TEST)) and ctx.world > 1
    for m in models.values():
        m.eval()
    with torch.no_grad():
        for table in ray.train.get_dataset_shard("test").iter_batches(batch_size=16384, batch_format="pyarrow"):
            b = from_table(table, schema, ctx.seq_len)
            flag = torch.from_numpy(table.column(COLD).to_numpy(zero_copy_only=False)) if cold else None
            if whole:  # every worker read it all: this one scores its users' rows
                mine = (user_shard(b.cat[:, user_col], ctx.rank, ctx.world) if user_col is not None
                        else user_shard(b.row_id, ctx.rank, ctx.world))
                b, flag = b.take(mine), None if flag is None else flag[mine]
            b = b.to(ctx.device)
            score_batch(ev, models, b, b.cat[:, user_col] if user_col is not None else None, flag, slices)
            if with_oracle and b.p_true is not None:
                ev.update_probs("oracle", b.p_true, b.label)
    for m in models.values():
        m.train()
    ev.all_reduce()
    return ev


def score_batch(ev: Evaluator, models: dict[str, Any], b: Any, users: torch.Tensor | None,
                cold: torch.Tensor | None, slices: dict[str, list[int]]) -> None:
    """One test batch ``b`` (a ``TensorLog`` on the models' device) into ``ev``: each model on
    all its rows, then on its cold users' rows (``cold``, a row mask) and on each committee
    slice it is scored on. Ordered by rows, not by model: the evaluator draws a tensor of
    row ids' bootstrap weights once and shares them while the same tensor comes in, so every
    model's whole batch goes first, then each subset (its ids taken once) for every model on it."""
    if set(slices) - set(models):
        raise ValueError(f"scored per committee slice but not among the models {sorted(models)}: "
                         f"{sorted(set(slices) - set(models))}")
    z: dict[str, torch.Tensor] = {}
    for name, m in models.items():
        x = b.for_model(m)
        z[name] = m(x.cat, x.dense, x.seq)[0]
        ev.update(name, z[name], b.label, b.row_id, users)
    subsets: list[tuple[torch.Tensor, list[tuple[str, str]]]] = []  # (row mask, [(model, its name there)])
    if cold is not None and cold.any():
        subsets.append((cold.to(b.label.device), [(n, f"{n}{COLD_SUFFIX}") for n in models]))
    for k in sorted({k for ks in slices.values() for k in ks}):
        if b.part is None:
            raise ValueError(f"{[n for n, ks in slices.items() if k in ks]} scored per committee slice, but the "
                             f"test rows carry no slice tag")
        subsets.append((b.part == k, [(n, slice_name(n, k)) for n, ks in slices.items() if k in ks]))
    for f, scored in subsets:
        if not f.any():
            continue
        ids, label, mine = b.row_id[f], b.label[f], None if users is None else users[f]
        for name, sub in scored:
            ev.update(sub, z[name][f], label, ids, mine)


def quiet_logs() -> None:
    """Ray Train logs every report (metrics included) at INFO from a logger named after
    its file, which ``LoggingConfig`` does not reach; long runs drowned the progress lines."""
    from recdistill.ray_env import quiet_train_worker

    quiet_train_worker()


NODE_SHARE = "node_share"  # loop-config: Train runs sharing this node's cores at once (students following a teacher)


def set_threads(cfg: ExperimentConfig, runs: int = 1) -> int:
    """Set torch's intra-op threads for this worker: ``platform.torch_threads``, or else the
    node's CPUs shared among its Train workers (and among ``runs`` Train runs training on it
    at once). Returns the count."""
    import ray.train

    if cfg.platform.torch_threads:
        n = cfg.platform.torch_threads
    else:
        local = max(1, ray.train.get_context().get_local_world_size()) * max(1, runs)
        n = max(1, (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
                // local)
    torch.set_num_threads(n)
    return n


def save_checkpoint(payload: dict[str, Any], metrics: dict[str, Any], rank: int) -> None:
    """Report ``metrics``; rank 0 attaches a checkpoint holding ``payload`` (tensors and
    plain containers only: it is loaded back as data)."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        torch.save(payload, os.path.join(d, STATE_FILE))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def restore_checkpoint() -> dict[str, Any] | None:
    """The payload of the run's latest checkpoint (loaded as data only), None on a fresh start."""
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    with ckpt.as_directory() as d:
        return load_dir(d)


def finish(metrics: dict[str, Any], rank: int,
           models: dict[str, torch.nn.Module | dict[str, torch.Tensor]] | None = None) -> None:
    """The last report: metrics and a small checkpoint (Train returns a run's metrics with
    its checkpoint). With ``models`` (name → trained model or its state dict), rank 0 also puts each one's
    weights there as ``weights/<name>.safetensors`` (``WEIGHTS_DIR``): the driver makes
    them the run's model artifacts (``artifacts.run_models``)."""
    import ray.train

    if rank != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        Path(d, "metrics.json").write_text(json.dumps(metrics, default=str))
        for name, model in (models or {}).items():
            path = Path(d, WEIGHTS_DIR, f"{name}.safetensors")
            path.parent.mkdir(parents=True, exist_ok=True)
            save_weights(model, path)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


WEIGHTS_DIR = "weights"  # in a run's final checkpoint: the trained models' weights (``finish``)


def hand_over_weights(store: Any, models: dict[str, torch.nn.Module], path_of: Callable[[str], str]) -> None:
    """Each model's weights put in the signal store (``store``: a ``SignalStore``) at
    ``path_of(name)``: mid-run, where the run's checkpoints keep only the latest state, the
    store is the place a driver on another node reads them from (online window boundaries)."""
    with tempfile.TemporaryDirectory() as d:
        local = Path(d, "model.safetensors")
        for name, model in models.items():
            save_weights(model, local)
            store.put_file(local, path_of(name))


def crash_specs(spec: str) -> list[tuple[str, int, str]]:
    """``FAIL_ENV``'s value as (role, step, marker file) triples."""
    out = []
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        bits = part.split(":", 2)
        if len(bits) != 3 or not bits[1].lstrip("-").isdigit():
            raise ValueError(f"{FAIL_ENV}={spec!r}: expected '<role>:<step>:<marker file>' specs separated by ';', "
                             f"got {part!r}")
        out.append((bits[0], int(bits[1]), bits[2]))
    return out


def test_hook_crash(role: str, step: int) -> None:
    """Kill this worker process when ``FAIL_ENV`` names this role and step (once per marker)."""
    for want_role, want_step, marker in crash_specs(os.environ.get(FAIL_ENV, "")):
        if want_role == role and step == want_step and not os.path.exists(marker):
            Path(marker).write_text(f"{role} worker {os.getpid()} killed at step {step}\n")
            # Train's controller takes a worker's last report (and so its checkpoint) off a
            # one-slot queue when it next polls; a crash before that poll loses the checkpoint,
            # which is Train's contract, not the fault this hook simulates. Die after two polls.
            time.sleep(2 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")))
            os._exit(1)


def test_hook_kill_hub(hub: Any, window: int) -> None:
    """Kill the signal hub actor (Ray restarts it) when ``KILL_HUB_ENV`` names this window (once)."""
    spec = os.environ.get(KILL_HUB_ENV, "")
    if not spec:
        return
    want, marker = spec.split(":", 1)
    if window == int(want) and not os.path.exists(marker):
        import ray

        Path(marker).write_text(f"hub killed by students worker {os.getpid()} waiting on window {window}\n")
        ray.kill(hub, no_restart=False)


def test_hook_dropped(window: int) -> bool:
    """Whether ``DROP_ENV`` says this window's signals must never be marked complete."""
    spec = os.environ.get(DROP_ENV, "")
    return bool(spec) and window in {int(x) for x in spec.split(",") if x}
