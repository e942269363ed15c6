"""Experiment trackers (MLflow, Weights & Biases, TensorBoard) with the epoch as the x-axis.

Tune's own logger callbacks plot against its ``training_iteration``, which is not the epoch: a
trial starts at epoch -1 (the initial evaluation) and a fork's first result is its window's epoch
(a fork from epoch 2 reports epoch 2 as iteration 1). Here MLflow's step is the epoch, W&B's
charts use the ``epoch`` metric as their step metric, and TensorBoard's step is the epoch; the
TensorBoard HParams of every trial include its perturbation settings (a grid's constant ones too).
``validate`` checks the trackers before Ray starts or anything is written.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from typing import Any

import ray
from ray.tune.logger import TBXLoggerCallback
from ray.tune.result import TIMESTEPS_TOTAL, TRAINING_ITERATION

from hba_sweep.foundation.errors import ConfigError

HPARAM_KEYS = (
    "perturb_type",
    "perturb_epoch",
    "perturb_length",
    "perturb_seed",
    "perturb_fraction",
    "random_seed",
    "lr",
    "rank",
    "vision_layers",
    "transformer_layers",
    "backbone",
)


def _need(package: str, flag: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"{flag}: the {package} package is not installed. Fix: pip install {package}, or drop {flag}."
        )


@contextlib.contextmanager
def _env(**values: str):
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def validate(mlflow_uri: str | None, wandb_project: str | None) -> None:
    """ConfigError (exit 2) for a tracker that would fail once the study runs."""
    if mlflow_uri:
        _need("mlflow", "--mlflow")
        from mlflow.tracking import MlflowClient  # reason: optional dependency, loaded when --mlflow asks for it

        quiet = logging.getLogger("mlflow")  # its "Creating initial MLflow database tables..." lines
        level = quiet.level
        quiet.setLevel(logging.WARNING)
        with _env(MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="10"):
            try:
                MlflowClient(tracking_uri=mlflow_uri).search_experiments(max_results=1)
            except Exception as exc:  # MlflowException, connection errors, a refused file store
                first = str(exc).split(". ")[0]
                raise ConfigError(
                    f"--mlflow {mlflow_uri}: MLflow cannot use this tracking URI ({first}). Fix: give a "
                    "database (sqlite:///path/mlflow.db) or a tracking server (http://host:5000); MLflow 3 "
                    "keeps file stores (file:///..., ./mlruns) read-only."
                ) from None
            finally:
                quiet.setLevel(level)
    if wandb_project:
        _need("wandb", "--wandb")
        mode = os.environ.get("WANDB_MODE", "").lower()
        if mode not in ("offline", "disabled", "dryrun") and not os.environ.get("WANDB_API_KEY") and not _has_api():
            raise ConfigError(
                f"--wandb {wandb_project}: no W&B login on this machine. Fix: `wandb login` (or "
                "WANDB_API_KEY=...), or WANDB_MODE=offline to write runs locally for `wandb sync`."
            )


def _has_api() -> bool:
    """Whether ``wandb login`` stored a key (~/.netrc) that the W&B API finds."""
    try:
        import wandb  # reason: optional dependency, loaded when --wandb asks for it

        return bool(wandb.Api(timeout=10).api_key)
    except Exception:
        return False


def callbacks(mlflow_uri: str | None, wandb_project: str | None, name: str, wandb_dir: str | None = None) -> list:
    """Tune callbacks: TensorBoard always (replacing Tune's default one), MLflow and W&B on request.

    ``wandb_dir``: where W&B writes its local files (``<wandb_dir>/wandb/``). By default the logging
    actor writes into the trial's staging folder, which Tune may have synced to storage before a
    short trial's W&B files exist (an offline run was then missing from the study)."""
    out: list = [EpochTBX()]
    if mlflow_uri:
        out.append(epoch_mlflow()(tracking_uri=mlflow_uri, experiment_name=name))
    if wandb_project:
        from ray.air.integrations.wandb import (  # reason: needs the optional wandb
            WANDB_ENV_VAR,
            WandbLoggerCallback,
            _force_on_current_node,
        )

        class EpochWandb(WandbLoggerCallback):
            _logger_actor_cls = epoch_wandb_actor()

            def _start_logging_actor(self, trial, exclude_results, **wandb_init_kwargs):
                if not self._remote_logger_class:  # as Ray's, without restarts: an actor whose arguments sit in
                    # the object store cannot be restarted, and Ray prints an error line saying so
                    env = {WANDB_ENV_VAR: os.environ[WANDB_ENV_VAR]} if WANDB_ENV_VAR in os.environ else {}
                    self._remote_logger_class = ray.remote(
                        num_cpus=0, **_force_on_current_node(), runtime_env={"env_vars": env}, max_restarts=0
                    )(self._logger_actor_cls)
                super()._start_logging_actor(trial, exclude_results, **wandb_init_kwargs)

        mode = os.environ.get("WANDB_MODE")  # the logging actors may not inherit this shell's environment
        extra = {**({"mode": mode} if mode else {}), **({"dir": wandb_dir} if wandb_dir else {})}
        out.append(EpochWandb(project=wandb_project, group=name, **extra))
    return out


def _epoch_step(result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the epoch where Tune's loggers look for their step."""
    if "epoch" not in result:
        return result
    return {**{k: v for k, v in result.items() if k != TIMESTEPS_TOTAL}, TRAINING_ITERATION: int(result["epoch"])}


def hparams(trial) -> dict[str, Any]:
    """What a trial varies plus its perturbation and model settings (constant in a grid phase, so not
    among Tune's evaluated params, yet what the HParams tab is for)."""
    config = trial.config or {}
    return {**{k: config[k] for k in HPARAM_KEYS if config.get(k) is not None}, **(trial.evaluated_params or {})}


def _tbx_base():
    return TBXLoggerCallback


class EpochTBX(_tbx_base()):
    """Tune's TensorBoard logger with step = epoch and the perturbation settings in HParams."""

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        super().log_trial_result(iteration, trial, _epoch_step(result))

    def _try_log_hparams(self, trial, result: dict) -> None:
        evaluated = trial.evaluated_params
        trial.evaluated_params = hparams(trial)
        try:
            super()._try_log_hparams(trial, result)
        finally:
            trial.evaluated_params = evaluated

    def log_trial_end(self, trial, failed: bool = False) -> None:
        evaluated = trial.evaluated_params
        trial.evaluated_params = hparams(trial)  # grid trials may have none: HParams are still written
        try:
            super().log_trial_end(trial, failed)
        finally:
            trial.evaluated_params = evaluated


def epoch_mlflow():
    from ray.air.integrations.mlflow import MLflowLoggerCallback  # reason: needs the optional mlflow

    class EpochMLflow(MLflowLoggerCallback):
        """MLflow's step is the epoch."""

        def log_trial_result(self, iteration: int, trial, result: dict) -> None:
            step = int(result["epoch"]) if "epoch" in result else None
            metrics = {k: v for k, v in result.items() if k != "config" and not k.startswith("config/")}
            if step is None:  # the trial's config is logged once, as the run's params (log_trial_start)
                return super().log_trial_result(iteration, trial, metrics)
            self.mlflow_util.log_metrics(run_id=self._trial_runs[trial], metrics_to_log=metrics, step=step)

    return EpochMLflow


class _EpochAxis:
    """The wandb module, with every run's charts on the ``epoch`` metric."""

    def __init__(self, wandb):
        self._wandb = wandb

    def init(self, *args, **kwargs):
        run = self._wandb.init(*args, **kwargs)
        run.define_metric("epoch")
        run.define_metric("*", step_metric="epoch")
        return run

    def __getattr__(self, name: str):
        return getattr(self._wandb, name)


def epoch_wandb_actor():
    from ray.air.integrations.wandb import _WandbLoggingActor  # reason: needs the optional wandb

    class EpochWandbActor(_WandbLoggingActor):
        def __init__(self, *args, **kwargs):
            os.environ["WANDB_SILENT"] = "true"  # this actor's process: banners, warnings and run summaries go
            super().__init__(*args, **kwargs)  # to the run's own log files (wandb/<run>/logs), not the terminal
            self._wandb = _EpochAxis(self._wandb)

        def run(self):
            super().run()  # ends with wandb.finish()
            # the W&B service stops now, not in an atexit hook of a process Ray is ending (whose traceback
            # reached the driver's terminal)
            getattr(self._wandb, "teardown", lambda: None)()

    return EpochWandbActor
