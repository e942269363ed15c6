"""A trial's identity: what decides its numbers, recorded when it starts and compared on every reuse.

Three parts: ``settings`` (the whole resolved config but the bookkeeping that never changes a number:
where it is saved, its name, the device, the fork source, speed switches that are exact), ``inputs``
(the SHA-256 of every file it reads: annotation CSVs, the image files they name, the reference RDM, a
pinned split, a backbone weights file) and the product ``version``. Two trials are the same trial when
their settings (``epochs`` aside: raising it extends a trial) and inputs are equal; the data paths
themselves are not part of it (moved data with the same content is the same input). File digests are
remembered per node (:mod:`hba_sweep.foundation.content_hash`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from hba_sweep import __version__
from hba_sweep.config import PATH_FIELDS
from hba_sweep.data.things import read_things_csv
from hba_sweep.foundation import content_hash
from hba_sweep.foundation.errors import HBAError

# Settings that never change what a run computes: where and under what name it is saved, where it runs,
# where it starts from (checked separately), logging, and exact speed switches.
BOOKKEEPING = frozenset(
    {
        "save_path",
        "run_name",
        "device",
        "resume_from",
        "init_from",
        "init_epoch",
        "baseline_checkpoint_path",
        "num_workers",
        "cache_dir",
        "prefix_on_gpu",
        "keep_images_in_memory",
        "progress",
        "cpu_fallback",
        "wandb_project",
        "wandb_entity",
    }
)
# Settings whose change extends a trial rather than making another one.
EXTENDS = frozenset({"epochs"})
NOT_SETTINGS = BOOKKEEPING | set(PATH_FIELDS) | {"split_file"}
WEIGHTS_FILE = "<weights file: see inputs.pretrained>"
IMAGE_SETS = (("img_annotations_file", "img_dir", "images"), ("rsa_annotations_file", "rsa_img_dir", "rsa_images"))


PLANNED_IDENTITY = "hba_identity"  # a trial config's key: the identity the driver planned (the trainable checks)


@dataclass(frozen=True)
class Identity:
    """What a trial is: its settings, the digests of its inputs, the product version."""

    settings: dict[str, Any]
    inputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # role -> {path, sha256[, files]}
    version: str = __version__

    @property
    def key(self) -> str:
        """Matches trials: settings (``epochs`` aside) and input contents; not paths, not the version."""
        return identity_key(self.settings, self.inputs)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "version": self.version, "settings": self.settings, "inputs": self.inputs}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> Identity:
        return Identity(dict(data.get("settings") or {}), dict(data.get("inputs") or {}), str(data.get("version", "")))


def settings_of(config: dict[str, Any]) -> dict[str, Any]:
    """The settings of a resolved config that decide its numbers (bookkeeping and data paths left out)."""
    out = {k: v for k, v in sorted(config.items()) if k not in NOT_SETTINGS}
    if out.get("pretrained") and os.path.isfile(str(out["pretrained"])):
        out["pretrained"] = WEIGHTS_FILE  # the file's content is an input; its path is not a setting
    return out


def identity_key(settings: dict[str, Any], inputs: dict[str, dict[str, Any]]) -> str:
    kept = {k: v for k, v in settings.items() if k not in EXTENDS}
    digests = {role: entry.get("sha256") for role, entry in sorted(inputs.items())}
    text = json.dumps([kept, digests], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _stat_key(path: str) -> tuple:
    try:
        return content_hash.stat_key(path)
    except OSError:
        return (os.path.abspath(path), None)


@lru_cache(maxsize=64)
def _names(annotations: str, _stat: tuple) -> tuple[str, ...]:
    return tuple(read_things_csv(annotations)[0])


def _image_set(annotations: str, folder: str) -> dict[str, Any]:
    names = _names(annotations, _stat_key(annotations))
    paths = [os.path.join(folder, n) for n in names]
    pairs = sorted(zip(names, content_hash.file_digests(paths), strict=True))  # the set, in any row order
    return {"path": folder, "sha256": content_hash.set_digest(*zip(*pairs, strict=True)), "files": len(names)}


def _file(path: str) -> dict[str, Any]:
    return {"path": path, "sha256": content_hash.file_digest(path)}


def _weights(pretrained: str | None) -> dict[str, Any] | None:
    if pretrained and os.path.isfile(str(pretrained)):
        return _file(str(pretrained))
    return None


def input_digests(config: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The content digest of every file a run with ``config`` reads (missing files are left out:
    the config checks name them). Image sets: one digest over the names and contents of the images
    the annotation file lists (re-hashed only when a file's stat changed)."""
    out: dict[str, dict[str, Any]] = {}
    for key in ("img_annotations_file", "rsa_annotations_file", "behavioral_rdm_file", "split_file"):
        path = config.get(key)
        if path and os.path.isfile(str(path)):
            out[key] = _file(str(path))
    for csv_key, dir_key, role in IMAGE_SETS:
        csv, folder = config.get(csv_key), config.get(dir_key) or config.get("img_dir")
        if csv and folder and os.path.isfile(str(csv)) and os.path.isdir(str(folder)):
            try:
                out[role] = _image_set(str(csv), str(folder))
            except (HBAError, OSError):  # an unreadable CSV or a missing image: the run's data checks name it
                continue
    weights = _weights(config.get("pretrained"))
    if weights is not None:
        out["pretrained"] = weights
    return out


INPUT_FIELDS = (*PATH_FIELDS, "split_file", "pretrained")


def trial_identity(config: dict[str, Any]) -> Identity:
    """The identity of a run with this resolved config (its input files hashed, memoised per node)."""
    return Identity(settings_of(config), input_digests(config))


def trial_identities(configs: list[dict[str, Any]]) -> list[Identity]:
    """Identities of many configs; the inputs are looked at once per distinct set of input paths."""
    seen: dict[tuple, dict[str, dict[str, Any]]] = {}
    out = []
    for config in configs:
        paths = tuple(config.get(k) for k in INPUT_FIELDS)
        if paths not in seen:
            seen[paths] = input_digests(config)
        out.append(Identity(settings_of(config), seen[paths]))
    return out


def differences(old: Identity, new: Identity, extends: bool = False) -> list[str]:
    """Each difference of ``new`` from ``old`` as one line ("lr: 0.01 -> 0.005", "behavioral_rdm_file:
    content changed (...)"); ``epochs`` counts only when ``extends`` is False."""
    lines = []
    for key in sorted(set(old.settings) | set(new.settings)):
        if key in EXTENDS and extends:
            continue
        a, b = old.settings.get(key, "<unset>"), new.settings.get(key, "<unset>")
        if a != b:
            lines.append(f"{key}: {a!r} -> {b!r}")
    for role in sorted(set(old.inputs) | set(new.inputs)):
        a, b = old.inputs.get(role), new.inputs.get(role)
        if a is None or b is None:
            lines.append(f"{role}: {'not read before' if a is None else 'no longer read'} ({(a or b).get('path')})")
        elif a.get("sha256") != b.get("sha256"):
            lines.append(f"{role}: content changed ({describe_change(a, b)})")
    return lines


def describe_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    where = old.get("path") if old.get("path") == new.get("path") else f"{old.get('path')} -> {new.get('path')}"
    count = ""
    if "files" in old and old.get("files") != new.get("files"):
        count = f", {old['files']} -> {new['files']} files"
    return f"{where}: sha256 {str(old.get('sha256'))[:12]} -> {str(new.get('sha256'))[:12]}{count}"


def planned_identity(identity: Identity) -> dict[str, Any]:
    """What a trial's config carries of its planned identity: the key and the input digests."""
    return {"key": identity.key, "inputs": identity.inputs}
