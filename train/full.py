"""The full refresh: bank and top retrained on the offline samples, published through the guard.

Run: ``recstream train full`` (once, now) or ``recstream train full --schedule`` (every
``TRAIN_REFRESH_EVERY``: ``weekly`` by default, ``daily`` or a number of seconds; a refresh
is due when the family has none that recent). ``--no-ray`` trains in this process.

It reads the samples the stream exported to the offline store (the parquet under Feast's
file source, ``{TRAIN_FEAST_DATA_DIR}/offline/samples``, one row per sample), keeps the
last ``TRAIN_REFRESH_WINDOW_DAYS`` by event time, holds out the newest ``TRAIN_HOLDOUT_FRAC``,
and trains a new bank (vocabularies from every id in the window, histories included) and
top network on the rest with Ray Train's ``TorchTrainer`` (``TRAIN_REFRESH_WORKERS`` workers,
GPUs where the cluster has them; ``models.train.fit`` is not data-parallel yet, so more than
one worker trains the same model on each: use one). The result is published as a new bank
version and its top (sample range: the parquet window), and becomes the family's ``live``
only if the guard (:mod:`train.guard`) finds it not worse than the live version on the
held-out slice; else the rejection is recorded. With ``TRAIN_TUNE=true`` the recipe is
first searched on the end of the training part (``models.tune``; a recipe setting given
as ``TRAIN_*`` is pinned); the chosen settings go into the result and the manifest. The
incremental trainer follows it at its next update. Ids first seen after this window take
the bank's OOV path until the next one.
"""

from __future__ import annotations

import json
import logging
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from models.data.samples import SampleSet
from models.registry import Registry
from train.data import to_sample_set
from train.settings import TrainSettings

log = logging.getLogger(__name__)
PERIODS = {"weekly": 7 * 86400.0, "daily": 86400.0, "hourly": 3600.0}


def period_s(every: str) -> float:
    """Seconds of ``TRAIN_REFRESH_EVERY`` (weekly, daily, hourly, or a number)."""
    return PERIODS[every] if every in PERIODS else float(every)


def offline_samples(s: TrainSettings) -> SampleSet:
    """The window of exported samples (event-time order)."""
    from stream.offline import read_samples

    frame = read_samples(s.feast_data_dir / "offline" / "samples")
    if frame.empty:
        raise RuntimeError(f"no exported samples under {s.feast_data_dir / 'offline'}")
    newest = int(frame["event_ts_ms"].max())
    frame = frame[frame["event_ts_ms"] >= newest - s.refresh_window_days * 86400_000]
    return to_sample_set(frame.to_dict("records"), max_len=s.max_history, seed=s.seed).samples


def _vocab(samples: SampleSet) -> dict[str, np.ndarray]:
    from models.bank import CAT, ITEM

    return {ITEM: np.concatenate([samples.item_id, samples.hist_item.ravel()]),
            CAT: np.concatenate([samples.cat_id, samples.hist_cat.ravel()])}


TUNABLE = ("lr", "bias_lr", "aux_weight", "input_var_floor", "epochs")


def pinned_settings(s: TrainSettings) -> dict[str, Any]:
    """The tunable recipe settings set explicitly (``TRAIN_LR=...``): not searched."""
    return {k: getattr(s, k) for k in TUNABLE
            if k in s.model_fields_set and getattr(s, k) is not None}


def fit_new(s: TrainSettings, train: SampleSet, out: Path, device: str,
            pinned: dict[str, Any] | None = None) -> None:
    """A new bank + top trained on ``train`` with the ``TRAIN_*`` recipe, saved to ``out``;
    with ``TRAIN_TUNE`` the recipe is searched first on the end of ``train``
    (``models.tune``; ``pinned``, by default :func:`pinned_settings`, kept as set) and the
    chosen settings written beside it (``{out}.tuned.json``)."""
    from models.registry import save_checkpoint
    from models.train import build_model, config_overrides, fit

    vocab = _vocab(train)
    cfg = s.train_config(device=device)
    overrides = config_overrides(s.arch, aux_weight=s.aux_weight,
                                 input_var_floor=s.input_var_floor)
    if s.tune:
        from models.tune import TuneConfig, tune_model

        tcfg = TuneConfig(trials=s.tune_trials, max_epochs=s.tune_max_epochs, seed=s.seed)
        tuned = tune_model(s.arch, vocab, train, cfg, tcfg, dim=s.dim,
                           pinned=pinned_settings(s) if pinned is None else pinned)
        cfg, overrides = tuned.train_config(cfg), tuned.overrides(s.arch)
        Path(f"{out}.tuned.json").write_text(json.dumps(tuned.summary(), default=float))
        log.info("full refresh: tuned %s (validation AUC %.4f)", tuned.params, tuned.val_auc)
    model = build_model(s.arch, vocab, dim=s.dim, **overrides)
    fit(model, train, cfg)
    save_checkpoint(model.cpu(), out)


def train_worker(config: dict[str, Any]) -> None:
    """Ray Train's loop per worker: :func:`fit_new`, saved by the first worker only."""
    import ray.train

    s = TrainSettings.model_validate_json(config["settings"])
    out = Path(config["out"]) if ray.train.get_context().get_world_rank() == 0 \
        else Path(tempfile.mkdtemp())
    fit_new(s, config["samples"], out, "cuda" if config["use_gpu"] else s.device,
            config["pinned"])


def _fit_on_ray(s: TrainSettings, train: SampleSet, out: Path) -> None:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    use_gpu = ray.cluster_resources().get("GPU", 0) > 0
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"settings": s.model_dump_json(), "samples": train,
                           "out": str(out), "use_gpu": use_gpu,
                           "pinned": pinned_settings(s)},  # every field is set once dumped
        scaling_config=ScalingConfig(num_workers=s.refresh_workers, use_gpu=use_gpu),
        run_config=RunConfig(name=f"recstream-refresh-{s.family}",
                             storage_path=str(out.parent / "ray_results")))
    trainer.fit()


def refresh(s: TrainSettings, *, use_ray: bool = True) -> dict[str, Any]:
    """One full refresh (see the module docstring); what it published and the verdict."""
    from models.registry import load_checkpoint
    from train.guard import judge

    start = time.perf_counter()
    samples = offline_samples(s)
    cut = len(samples) - max(1, round(len(samples) * s.holdout_frac))
    train, holdout = samples.subset(slice(0, cut)), samples.subset(slice(cut, None))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "model"
        if use_ray:
            _fit_on_ray(s, train, out)
        else:
            fit_new(s, train, out, s.device)
        candidate = load_checkpoint(out)
        tuned_file = Path(f"{out}.tuned.json")
        tuned = json.loads(tuned_file.read_text())["params"] if tuned_file.is_file() else None
    reg = Registry(s.registry_root)
    parent = reg.pointer(s.family)
    live = reg.load(parent) if parent else None
    verdict = judge(candidate, live, holdout, None, s.guard)
    window = {"source": "offline", "samples": len(samples),
              "first_event_ts_ms": int(samples.ts.min()),
              "newest_event_ts_ms": int(samples.ts.max())}
    result: dict[str, Any] = {"promoted": verdict.promote, "reason": verdict.reason,
                              "samples": len(samples), "metrics": verdict.metrics(),
                              "tuned": tuned}
    if verdict.promote:
        vid = reg.publish(candidate, s.family, parent=parent, sample_range=window,
                          metrics=verdict.metrics(),
                          extra={"verdict": "promote", "job": "full_refresh",
                                 "tuned": tuned})
        reg.promote(s.family, vid, reason=f"full refresh, guard: {verdict.reason}")
        result["version"] = vid
    else:
        reg.record_rejection(s.family, reason=verdict.reason, metrics=verdict.metrics(),
                             candidate_manifest={"parent": parent, "sample_range": window,
                                                 "arch": candidate.arch,
                                                 "job": "full_refresh"})
    result["seconds"] = time.perf_counter() - start
    log.info("full refresh: %s", result)
    return result


def last_refresh_age_s(reg: Registry, family: str) -> float | None:
    """Seconds since the family's last full refresh (published or rejected), None if none."""
    import datetime as dt

    stamps = [m["created_at"] for m in reg.versions(family)
              if (m.get("sample_range") or {}).get("source") == "offline"]
    stamps += [r["at"] for r in reg.rejections(family)
               if (r.get("candidate") or {}).get("job") == "full_refresh"]
    if not stamps:
        return None
    last = max(dt.datetime.fromisoformat(x) for x in stamps)
    return (dt.datetime.now(dt.UTC) - last).total_seconds()


def run_scheduled(s: TrainSettings, stop: threading.Event, *, use_ray: bool = True) -> None:
    """Refresh whenever the last one is older than ``TRAIN_REFRESH_EVERY``, until ``stop``."""
    every = period_s(s.refresh_every)
    reg = Registry(s.registry_root)
    while not stop.is_set():
        age = last_refresh_age_s(reg, s.family)
        if age is None or age >= every:
            try:
                refresh(s, use_ray=use_ray)
            except RuntimeError as exc:  # nothing exported yet: try again later
                log.warning("full refresh skipped: %s", exc)
            age = 0.0
        stop.wait(min(max(every - age, 1.0), 60.0))
