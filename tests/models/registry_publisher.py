"""A publisher that never stops: tiny models published, promoted, rolled back, rejected, in a
loop, for the registry's kill test (tests/models/test_registry_kill.py) to SIGKILL anywhere.

Run by hand: ``python tests/models/registry_publisher.py ROOT SEED [N]`` (N iterations,
default forever).
"""

from __future__ import annotations

import contextlib
import random
import sys

import numpy as np
import torch

from models.bank import EmbeddingBank
from models.registry import Registry, RegistryError
from models.train import build_model

FAMILIES = {"din": "din", "base": "base"}  # family -> architecture (tiny, fast to build)
VOCAB = {"item": np.arange(1, 40) * 3, "cat": np.arange(1, 6)}


def publish_loop(root: str, seed: int, iterations: int | None = None) -> None:
    """Publishes and moves pointers until killed (or ``iterations`` done)."""
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    reg = Registry(root)
    bank = EmbeddingBank(VOCAB, dim=4)
    step = 0
    while iterations is None or step < iterations:
        step += 1
        if rng.random() < 0.3:  # a new bank now and then: a bank publish inside the publish
            bank = EmbeddingBank(VOCAB, dim=4)
        family = rng.choice(sorted(FAMILIES))
        model = build_model(FAMILIES[family], bank)
        vid = reg.publish(model, family, parent=reg.pointer(family),
                          sample_range={"topic": "samples", "partitions": {"0": [step, step + 9]}},
                          metrics={"auc": rng.random()}, code_version=f"seed{seed}")
        action = rng.random()
        if action < 0.45:
            reg.promote(family, vid, reason=f"step {step}")
        elif action < 0.6:
            with contextlib.suppress(RegistryError):  # nothing earlier yet
                reg.rollback(family, reason="worse")
        elif action < 0.8:
            reg.set_pointer(family, "candidate", vid)
        else:
            reg.record_rejection(family, candidate_manifest=reg.manifest(vid), reason="worse",
                                 metrics={"auc": 0.5})


if __name__ == "__main__":
    publish_loop(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]) if len(sys.argv) > 3 else None)
