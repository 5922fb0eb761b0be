"""The first model: full training from an events source, a checkpoint and a registry version.

Run: ``recstream train --source synthetic --events 20000`` or
``recstream train --source movielens --data ../shared/data/ml-100k``.
It trains bank + top on the first 80% of the events by time, evaluates on the rest, writes
the checkpoint directory ``TRAIN_OUT_DIR`` (what ``infra/serve.yaml`` points at) and
publishes the same model to the registry (``TRAIN_REGISTRY_ROOT``) as a version of
``TRAIN_FAMILY``; it becomes the family's ``live`` version when there is none yet (a later
model goes through the guard: ``recstream train full``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from train.settings import TrainSettings


def load_frame(source: str, n_events: int, data_dir: Path) -> pd.DataFrame:
    """An events frame from ``source``: ``synthetic`` (n_events) or ``movielens`` (data_dir)."""
    if source == "synthetic":
        from stream.synthetic import generate

        return generate(n_events)
    from models.data.movielens import load_movielens

    return load_movielens(data_dir)


def train_full(frame: pd.DataFrame, s: TrainSettings, *, publish: bool = True
               ) -> dict[str, Any]:
    """Full training (bank + top) on the first 80% by time; evaluate on the rest; save."""
    from models.allocator import keep_freed_memory
    from models.data.samples import build_samples, time_split
    from models.registry import Registry, save_checkpoint
    from models.train import build_model, config_overrides, evaluate, fit

    keep_freed_memory()  # a training process: reuse each step's memory (models/allocator.py)
    start = time.perf_counter()
    samples = build_samples(frame, max_len=s.max_history)
    train, test = time_split(samples, train_frac=0.8)
    overrides = config_overrides(s.arch, aux_weight=s.aux_weight,
                                 input_var_floor=s.input_var_floor)
    import torch

    torch.manual_seed(s.seed)  # the initial weights too: one TRAIN_SEED, one model
    model = build_model(s.arch, frame, dim=s.dim, **overrides)
    fit(model, train, s.train_config())
    metrics = {k: float(v) for k, v in evaluate(model, test).items()}
    save_checkpoint(model, s.out_dir)
    out: dict[str, Any] = {"arch": s.arch, "out_dir": str(s.out_dir)}
    if publish:
        reg = Registry(s.registry_root)
        ts_ms = frame["ts"].astype("int64") * 1000  # the frame's ts: unix seconds
        window = {"source": "frame", "events": len(frame), "first_ts_ms": int(ts_ms.min()),
                  "newest_event_ts_ms": int(ts_ms.max())}
        version = reg.publish(model, s.family, parent=None, sample_range=window,
                              metrics={"holdout": metrics})
        out["version"] = version
        if reg.pointer(s.family) is None:
            reg.promote(s.family, version, reason="first model of the family")
            out["promoted"] = True
    return {**out, "seconds": time.perf_counter() - start, **metrics}
