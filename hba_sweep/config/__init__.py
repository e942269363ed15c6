"""Config layer: the training config (TrainConfig: schema and coercion in train_config, value checks
in train_checks, file checks in file_checks), the inference config (infer_config), the one YAML +
--set loader both use (loader) and the one table of the published configs' keys (published_keys).
Validation knows the backbones' depths and the registered perturbation types, so this layer sits
above model and perturbations."""

from hba_sweep.config.file_checks import split_sizes, uses_baseline_path
from hba_sweep.config.loader import parse_overrides
from hba_sweep.config.train_config import (
    ALIASES,
    DEFAULTS,
    FIELD_NAMES,
    FORK_MAY_CHANGE,
    PATH_FIELDS,
    RESUME_MAY_CHANGE,
    TrainConfig,
    from_dict,
    load_config,
    resolve_paths,
    run_dir,
    run_name,
    save_config,
)

__all__ = [
    "TrainConfig",
    "load_config",
    "from_dict",
    "parse_overrides",
    "resolve_paths",
    "save_config",
    "run_name",
    "run_dir",
    "split_sizes",
    "uses_baseline_path",
    "DEFAULTS",
    "FIELD_NAMES",
    "ALIASES",
    "PATH_FIELDS",
    "FORK_MAY_CHANGE",
    "RESUME_MAY_CHANGE",
]
