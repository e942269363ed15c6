"""The options of ``run``, declared once.

Each :class:`RunOptions` field that ``run`` takes on the command line is declared with
:func:`option`: its flag, help and argparse settings, and whether a study submitted as a Ray Job
(``run --submit``) passes it on to the job's ``run`` command. From these declarations come the parser
(:func:`add_arguments`), the options of a parsed command line (:meth:`RunOptions.from_args`) and the
job's command line (:func:`command_line`): a new option of ``run`` is one field here.

No Ray or torch here: the parser is built for ``--help``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import Field, dataclass, field, fields
from typing import Any

DEFAULT_STORAGE = "ray_results"


def _number(kind: type, minimum: float, words: str) -> Callable[[str], Any]:
    """An argparse ``type``: ``kind(value)`` of at least ``minimum`` (``words`` says so in the error)."""

    def parse(value: str) -> Any:
        try:
            number = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{value!r} is not {'an integer' if kind is int else 'a number'}"
            ) from None
        if number < minimum:
            raise argparse.ArgumentTypeError(f"{value!r} {words}")
        return number

    return parse


non_negative = _number(float, 0, "must not be negative")
count = _number(int, 1, "must be 1 or more")


def experiment_name(value: str) -> str:
    """--name: the same rule as a search space's NAME (it becomes a directory under --storage)."""
    from hba_sweep.sweep.spec import NAME_RE  # reason: the search-space loader imports torch (through config)

    if not NAME_RE.match(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a valid experiment name: use letters, digits, _ . - only")
    return value


def option(default: Any, flag: str, help: str, *, forward: bool = False, **argparse_settings: Any) -> Any:
    """A RunOptions field that is the command-line option ``flag``; ``forward``: a submitted job's
    ``run`` command carries it too."""
    return field(
        default=default, metadata={"flag": flag, "help": help, "forward": forward, "argparse": argparse_settings}
    )


@dataclass
class RunOptions:
    """The choices of one ``run`` (the command line's, or a caller's)."""

    storage: str = option(
        DEFAULT_STORAGE, "--storage", "experiment storage: a path or a pyarrow URI (s3://...)", forward=True
    )
    name: str | None = option(
        None, "--name", "experiment name (default: the file's NAME, or its stem)", forward=True, type=experiment_name
    )
    address: str | None = option(
        None,
        "--address",
        "attach to a running Ray cluster: host:port from `ray start "
        "--head`, or auto (default: $RAY_ADDRESS, else start one here)",
    )
    resume: bool = option(
        False,
        "--resume",
        "finish an interrupted study, or grow it after editing the search-space file (no finished trial re-runs)",
        forward=True,
        action="store_true",
    )
    max_concurrent: int | None = option(
        None, "--max-concurrent", "at most this many trials at once", forward=True, type=count
    )
    cpus_per_trial: float | None = option(
        None, "--cpus-per-trial", "override RESOURCES['cpu']", forward=True, type=non_negative
    )
    gpus_per_trial: float | None = option(
        None, "--gpus-per-trial", "override RESOURCES['gpu'] (fractions share a GPU)", forward=True, type=non_negative
    )
    dashboard: bool = option(True, "--no-dashboard", "start Ray without its dashboard", action="store_false")
    dashboard_host: str = option("127.0.0.1", "--dashboard-host", "dashboard bind address (default 127.0.0.1)")
    wandb_project: str | None = option(
        None, "--wandb", "log to Weights & Biases (needs wandb installed)", forward=True, metavar="PROJECT"
    )
    mlflow_uri: str | None = option(
        None, "--mlflow", "log to MLflow (needs mlflow installed)", forward=True, metavar="TRACKING_URI"
    )
    verbose: int = option(
        1,
        "--verbose",
        "Tune output: 0 silent, 1 the progress table (default), 2 every result, 3 debug",
        forward=True,
        type=int,
        choices=(0, 1, 2, 3),
    )
    ray_init: dict[str, Any] = field(default_factory=dict)  # extra ray.init kwargs (tests: num_cpus=2)
    echo: Callable[[str], None] = print

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> RunOptions:
        """The options of a command line parsed by a parser :func:`add_arguments` filled."""
        return cls(**{f.name: getattr(args, f.name) for f in command_options()})


def command_options() -> list[Field]:
    """The RunOptions fields that are command-line options, in declaration order."""
    return [f for f in fields(RunOptions) if "flag" in f.metadata]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add every command-line option of RunOptions to ``run``'s parser (``dest`` = the field name)."""
    for f in command_options():
        parser.add_argument(
            f.metadata["flag"], dest=f.name, default=f.default, help=f.metadata["help"], **f.metadata["argparse"]
        )


def command_line(opts: RunOptions) -> list[str]:
    """The forwarded options of ``opts`` as ``run`` arguments: flags set, options with a value."""
    words: list[str] = []
    for f in command_options():
        if not f.metadata["forward"]:
            continue
        value, action, flag = getattr(opts, f.name), f.metadata["argparse"].get("action"), f.metadata["flag"]
        if action in ("store_true", "store_false"):
            words += [flag] if value == (action == "store_true") else []
        elif value is not None:
            words += [flag, str(value)]
    return words
