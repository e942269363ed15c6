"""Config layer: the training config (TrainConfig: schema, validation, YAML + --set loading, run
names) and the published configs' key rules (published_keys). Validation knows the backbones'
depths and the registered perturbation types, so this layer sits above model and perturbations."""

from hba_sweep.config.train_config import (
    ALIASES, DEFAULTS, FIELD_NAMES, FORK_MAY_CHANGE, PATH_FIELDS, RESUME_MAY_CHANGE, TrainConfig, from_dict,
    load_config, parse_overrides, resolve_paths, run_dir, run_name, save_config, split_sizes, uses_baseline_path,
)

__all__ = [
    "TrainConfig", "load_config", "from_dict", "parse_overrides", "resolve_paths", "save_config", "run_name", "run_dir",
    "split_sizes", "uses_baseline_path", "DEFAULTS", "FIELD_NAMES", "ALIASES", "PATH_FIELDS", "FORK_MAY_CHANGE", "RESUME_MAY_CHANGE",
]
