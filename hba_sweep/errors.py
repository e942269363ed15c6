"""User-facing errors: the CLI prints their message and exits non-zero, no traceback."""

from __future__ import annotations


class HBAError(Exception):
    """A mistake the user can fix; the message names the file, the field and the fix."""

    exit_code = 2


class ConfigError(HBAError):
    """A training or sweep configuration is invalid."""


class DataError(HBAError):
    """A data file (CSV, image, RDM, index) is missing or malformed."""


class CheckpointError(HBAError):
    """A checkpoint is missing, truncated or corrupted."""


class SearchSpaceError(HBAError):
    """A search-space file is malformed."""
