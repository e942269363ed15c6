"""What the command parsers share: registering a subcommand (its help line from ``COMMANDS``) with its handler,
and ``--set KEY=VALUE``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from hba_sweep.cli import COMMANDS


def add_command(
    subparsers: Any,
    name: str,
    func: Callable[[argparse.Namespace], int],
    description: str | None = None,
) -> argparse.ArgumentParser:
    """Register subcommand ``name`` (its one-line help: ``COMMANDS``), run by ``func(args)``; the caller adds
    its arguments to the parser returned."""
    parser = subparsers.add_parser(name, help=COMMANDS[name][2], description=description)
    parser.set_defaults(func=func)
    return parser


def add_overrides(parser: argparse.ArgumentParser, help: str) -> None:
    """``--set KEY=VALUE`` (repeatable), gathered in ``args.overrides``."""
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help=help)
