"""Reading a YAML mapping with clear errors (configs, search-space bases, evaluation-set files).

Parsing is bounded: an alias (``*name``) repeats its anchor's whole subtree, so a few lines of nested
aliases ("billion laughs") stand for billions of values that any walk over the result (validation, a
message) would visit. The composed document's size with every alias expanded is counted first (linear
in the file) and a document over ``MAX_NODES`` is refused before anything is built from it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from hba_sweep.foundation.errors import ConfigError, HBAError

MAX_NODES = 100_000  # values of a document with every alias expanded (a config has a few hundred)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes of ``node``'s subtree with aliases expanded (shared subtrees counted each time they occur)."""
    if id(node) in memo:
        return memo[id(node)]
    memo[id(node)] = MAX_NODES + 1  # a node reached again while counting itself: a recursive alias
    if isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    elif isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(v, memo) for v in node.value)
    else:
        size = 1
    memo[id(node)] = min(size, MAX_NODES + 1)
    return memo[id(node)]


def compose_bounded(text: str, source: str, error: type[HBAError] = ConfigError) -> tuple[yaml.Node | None, Any]:
    """The document's node (its marks give line numbers) and its data, composed once with the expanded
    size bounded (see the module docstring); a syntax error passes through as ``yaml.YAMLError``."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        try:
            size = _expanded_size(node, {})
        except RecursionError:
            size = MAX_NODES + 1
        if size > MAX_NODES:
            raise error(
                f"{source}: the YAML expands to more than {MAX_NODES} values (aliases '*name' repeating "
                "anchors '&name', or nesting too deep); it is not read. Fix: write the values out, or "
                "use fewer aliases."
            )
        return node, loader.construct_document(node)
    finally:
        loader.dispose()


def load_yaml_text(text: str, source: str, error: type[HBAError] = ConfigError) -> Any:
    """``yaml.safe_load`` with the expanded size bounded; errors name ``source``."""
    try:
        return compose_bounded(text, source, error)[1]
    except yaml.YAMLError as exc:
        raise error(f"{source}: not valid YAML ({exc}). Fix: correct the syntax.") from None


def read_yaml(
    path: str | os.PathLike,
    error: type[HBAError] = ConfigError,
    what: str = "config file",
    missing_fix: str = "check the path (demo: python -m hba_sweep demo-data data/demo)",
) -> dict[str, Any]:
    """Read a YAML mapping, with clear errors for a missing file, bad syntax, an alias bomb or a non-mapping."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{p}: no such {what}. Fix: {missing_fix}.")
    data = load_yaml_text(p.read_text(), str(p), error) or {}
    if not isinstance(data, dict):
        raise error(
            f"{p}: expected a mapping of keys to values, got {type(data).__name__}. Fix: write key: value lines."
        )
    return data
