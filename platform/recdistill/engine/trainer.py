"""The Ray Train runs of every Ray pipeline: one factory, so the teacher, the student
groups, the online loops and the transfer variants get the same scaling, failure,
checkpoint, logging and test-hook settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from recdistill.config import ConfigError, ExperimentConfig
from recdistill.train.worker import TEST_HOOKS, TRAINS_ON, WHOLE_TEST


def use_gpu(cfg: ExperimentConfig) -> bool:
    import ray

    if cfg.platform.use_gpu == "auto":
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        if cfg.run.device == "cuda" and not gpus:  # else its workers would train on CPUs unasked
            raise ConfigError("run.device=cuda, and the Ray cluster has no GPUs (ray.cluster_resources() lists none)")
        return gpus and cfg.run.device != "cpu"
    return cfg.platform.use_gpu == "yes"


def check_device(cfg: ExperimentConfig) -> None:
    """Refuse ``run.device=cuda`` on a Ray cluster without GPUs where Ray workers train (they
    train on the device Ray gives them); the local engine picks its own device."""
    if cfg.trains_on_ray():
        use_gpu(cfg)


def worker_gpus(cfg: ExperimentConfig, together: int = 1, cluster_gpus: float | None = None,
                workers: int = 1) -> float:
    """The GPU share of one GPU Train worker (``platform.gpus_per_worker``). ``together``:
    the one-worker Train runs that must run at the same time (an online run's teacher and
    student group); under auto they split the GPUs when there are fewer than them. A run of
    ``workers`` > 1 (DDP) takes a whole GPU per worker whatever the share: Ray could place
    two ranks of fractional shares on one device, where NCCL refuses to join them."""
    if workers > 1:
        return 1.0
    share = cfg.platform.gpus_per_worker
    if share != "auto":
        return float(share)
    if together <= 1:
        return 1.0
    import ray

    gpus = ray.cluster_resources().get("GPU", 0) if cluster_gpus is None else cluster_gpus
    if gpus >= together:
        return 1.0
    return max(0.01, (gpus or 1.0) / together)  # fewer GPUs than runs (none: use_gpu=yes asked anyway)


def test_hook_env() -> dict[str, str]:
    """The fault-injection hooks set in this process, for the workers' environment."""
    return {k: os.environ[k] for k in TEST_HOOKS if os.environ.get(k)}


def ray_trainer(fn: Callable, name: str, cfg: ExperimentConfig, loop_config: dict[str, Any],
                datasets: dict[str, Any], workers: int, storage: Path, callbacks: list[Any] | None = None,
                together: int = 1) -> Any:
    """A Train run of ``fn`` on ``workers`` workers, its datasets read in order: a
    ``TorchTrainer`` (DDP's process group) for two workers or more, Train's plain
    ``DataParallelTrainer`` for one (``trainer_class``). ``callbacks`` run on Train's
    controller after each report (``engine.live.Relay``); inside a Tune trial, Train's Tune
    callback is added, so Tune sees every report as it comes."""
    import ray.train
    from ray.data import ExecutionOptions
    from ray.tune.trainable.trainable_fn_utils import _in_tune_session

    callbacks = list(callbacks or [])
    if _in_tune_session():
        callbacks.append(_tune_epochs())

    gpu = use_gpu(cfg)
    env = test_hook_env()
    schema = loop_config.get("schema")
    # GAUC needs each user's rows on one worker: with several, each reads the whole test
    # split and scores its own users' rows (``train.worker.score_test``)
    whole_test = workers > 1 and "test" in datasets and getattr(schema, "user_field", None) is not None
    loop_config = {**loop_config, WHOLE_TEST: whole_test}
    return trainer_class(workers)(
        fn, train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=workers, use_gpu=gpu,
            resources_per_worker={"CPU": cfg.platform.cpus_per_worker,
                                  **({"GPU": worker_gpus(cfg, together, workers=workers)} if gpu else {})}),
        run_config=ray.train.RunConfig(
            name=name, storage_path=str(storage.resolve()),
            failure_config=ray.train.FailureConfig(max_failures=cfg.platform.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2),
            # Train echoes every report and checkpoint path at INFO; the driver prints progress
            logging_config=ray.train.LoggingConfig(log_level="WARNING"), callbacks=callbacks or None,
            worker_runtime_env={"env_vars": env} if env else None),
        datasets=datasets,
        # log (time) order within each shard: forward distillation and the students'
        # batches follow time, as in the single-process engine
        # One worker reads each dataset whole, in its own process: a split would start a
        # coordinator actor per dataset (seconds of fixed cost per Train run) to feed one reader.
        dataset_config=ray.train.DataConfig(
            datasets_to_split=[] if workers == 1 else
            [n for n in datasets if not (whole_test and n == "test")] if whole_test else "all",
            execution_options=ExecutionOptions(preserve_order=True)))


def trainer_class(workers: int) -> type:
    """``TorchTrainer`` where a process group joins the workers; Train's own
    ``DataParallelTrainer`` for one worker, which has no one to join. A ``TorchTrainer``
    pickles its ``TorchConfig`` to Train's controller, whose process then imports torch only
    to set up a one-rank gloo group: its controller phase 4.1 s against 2.3 s, an empty run
    10.0 s against 8.9 s (``benchmarks/bench_train_start.py``), paid by every student group,
    committee, transfer variant, online loop and Tune trial. Its one other duty, the CUDA device, is
    ``train.worker.worker_prologue``'s."""
    if workers > 1:
        from ray.train.torch import TorchTrainer

        return TorchTrainer
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    return DataParallelTrainer


def _tune_epochs() -> Any:
    """Train's Tune callback, passing on only the reports after which the run trains on
    (``TRAINS_ON``): a scheduler that stopped a trial at its last epoch would kill it
    before it scores the test split, and a finished trial reports its end itself."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class TuneEpochs(TuneReportCallback):
        def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
            if metrics and metrics[0].get(TRAINS_ON):
                super().after_report(run_context, metrics, checkpoint)

    return TuneEpochs()


def fit_metrics(fn: Callable, name: str, cfg: ExperimentConfig, loop_config: dict[str, Any],
                datasets: dict[str, Any], storage: Path, callbacks: list[Any] | None = None,
                together: int = 1) -> dict[str, Any]:
    """Run a one-worker Train run to its end; its final reported metrics, and under
    ``CHECKPOINT`` the path of its final checkpoint (the trained models' weights, see
    ``train.worker.finish``)."""
    result = ray_trainer(fn, name, cfg, loop_config, datasets, 1, storage, callbacks, together).fit()
    return {**result.metrics, CHECKPOINT: final_checkpoint(result)}


CHECKPOINT = "checkpoint_path"


def final_checkpoint(result: Any) -> str | None:
    """The directory of a run's last checkpoint (its ``finish`` report), on the run's storage."""
    return result.checkpoint.path if result.checkpoint is not None else None


def final_weights(checkpoint: str | None, name: str) -> Path | None:
    """The weights ``train.worker.finish`` saved for model ``name`` in a final checkpoint."""
    from recdistill.train.worker import WEIGHTS_DIR

    path = Path(checkpoint, WEIGHTS_DIR, f"{name}.safetensors") if checkpoint else None
    return path if path is not None and path.is_file() else None


def model_checkpoint(result: Any) -> str | None:
    """Path of the run's last checkpoint that holds model state (the final one holds metrics)."""
    from recdistill.train.checkpoint import STATE_FILE

    for ckpt, _ in reversed(getattr(result, "best_checkpoints", None) or []):
        if os.path.exists(os.path.join(ckpt.path, STATE_FILE)):
            return ckpt.path
    return None
