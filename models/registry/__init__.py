"""Saved models: the Registry (versions, manifests, pointers, rollback; ``core``) and the
single checkpoint directories that came before it (``checkpoint``).

``Registry(root).load(vid)`` and ``load_checkpoint(dir)`` import neither the training code
nor pandas: a serving process pays for the architectures and safetensors only. docs/models.md,
"Model registry", describes the layout and the guarantees.
"""

from models.registry.checkpoint import (
    load_bank,
    load_checkpoint,
    read_meta,
    save_bank,
    save_checkpoint,
    save_top,
)
from models.registry.core import Registry, detect_code_version
from models.registry.serial import IntegrityError, RegistryError, VersionNotFound
from models.registry.store import NAME_RE, check_name

__all__ = [
    "NAME_RE",
    "IntegrityError",
    "Registry",
    "RegistryError",
    "VersionNotFound",
    "check_name",
    "detect_code_version",
    "load_bank",
    "load_checkpoint",
    "read_meta",
    "save_bank",
    "save_checkpoint",
    "save_top",
]
