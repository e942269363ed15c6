"""Studies whose trials train with a stand-in instead of ``run_training_experiment``.

``with training(fn): run_study(...)`` swaps the runner's trainable for ``train_hba`` running ``fn``
(e.g. ``support.sleep_trainable.sleep_training``): everything else (Tune, the searcher, reports,
checkpoints on storage, done.json) is the product's. The stand-in and this module travel to Ray's
workers by value (the workers need not see tests/ on their path).
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from unittest import mock

import ray.cloudpickle

from hba_sweep.sweep import runner
from trainables import hba_trainable


def trainable_with(train_fn: Callable) -> Callable:
    """``train_hba`` with ``train_fn`` in place of ``run_training_experiment`` (named train_hba for Tune)."""
    for fn in (_train_with, inspect.unwrap(getattr(train_fn, "func", train_fn))):
        module = sys.modules.get(getattr(fn, "__module__", ""))
        if module is not None and module.__name__ != "__main__":
            ray.cloudpickle.register_pickle_by_value(module)
    return functools.update_wrapper(functools.partial(_train_with, train_fn), hba_trainable.train_hba)


def _train_with(train_fn: Callable, config: dict, **kwargs) -> None:
    with mock.patch.object(hba_trainable, "run_training_experiment", train_fn):
        hba_trainable.train_hba(config, **kwargs)


@contextmanager
def training(train_fn: Callable) -> Iterator[None]:
    """Studies run inside this block train with ``train_fn``."""
    with mock.patch.object(runner, "train_hba", trainable_with(train_fn)):
        yield
