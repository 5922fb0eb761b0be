"""The quality benchmark's peer: DeepCTR-Torch 0.3.0's WDL / DIN / DIEN on our samples.

Run: ``tuned = tune_peer("din", protocol, settings, TuneConfig())`` then ``run_peer("din",
protocol, settings, tuned.params, seed)``. The peer gets the same search as ours
(``models.tune.search``: the same trials, validation split, epochs and early stopping) over
its own settings: Adam's rate, its embedding L2 and its DIEN's auxiliary weight ``alpha``
(its defaults first: 1e-3; 1e-6, WDL 1e-5; 1). Installed with ``pip install --no-deps
deepctr-torch==0.3.0`` (optional).
"""

from __future__ import annotations

import contextlib
import io
import time
from typing import Any

import numpy as np
import torch

from bench.quality_protocols import Protocol
from models.data.samples import SampleSet
from models.metrics import ranking_metrics
from models.tune import EarlyStop, TuneConfig, Tuned, carve, search, val_auc

PEER = "deepctr-torch 0.3.0"
PEER_ARCH = {"base": "WDL (sum-pooled history)", "din": "DIN", "dien": "DIEN (AUGRU, negsampling)"}
PEER_SPACE = {"lr": (3e-4, 1e-2), "l2_emb": (1e-7, 1e-4), "alpha": (0.3, 30.0)}


def peer_space(arch: str) -> dict[str, tuple[float, float]]:
    """What the peer's search varies (``alpha``: DIEN's only)."""
    return {k: v for k, v in PEER_SPACE.items() if k != "alpha" or arch == "dien"}


def peer_defaults(arch: str) -> dict[str, float]:
    """The peer's own defaults: Adam at 1e-3, embedding L2 1e-6 (WDL: 1e-5), alpha 1."""
    return {"lr": 1e-3, "l2_emb": 1e-5 if arch == "base" else 1e-6} | (
        {"alpha": 1.0} if arch == "dien" else {})


def _inputs(s: SampleSet, item_vocab: np.ndarray, cat_vocab: np.ndarray,
            neg: bool) -> dict[str, np.ndarray]:
    """The samples as DeepCTR input arrays: ids remapped to 1..n (0 = padding)."""
    def remap(vocab: np.ndarray, ids: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(vocab, ids)
        return np.where(ids > 0, pos + 1, 0).astype(np.int64)

    x = {"item_id": remap(item_vocab, s.item_id), "cate_id": remap(cat_vocab, s.cat_id),
         "hist_item_id": remap(item_vocab, s.hist_item),
         "hist_cate_id": remap(cat_vocab, s.hist_cat), "seq_length": s.hist_len.astype(np.int64)}
    if neg:
        x["neg_hist_item_id"] = remap(item_vocab, s.neg_item)
        x["neg_hist_cate_id"] = remap(cat_vocab, s.neg_cat)
    return x


class Peer:
    """One DeepCTR model of ``arch`` over a protocol's vocabularies with ``params``
    (:data:`PEER_SPACE`)."""

    def __init__(self, arch: str, p: Protocol, dim: int, params: dict[str, Any], seed: int,
                 device: str = "cpu") -> None:
        from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat, get_feature_names
        from deepctr_torch.models import DIEN, DIN, WDL

        self.arch, self.items, self.cats = arch, p.vocab("item_id"), p.vocab("category_id")
        n_items, n_cats, t = len(self.items) + 1, len(self.cats) + 1, p.train.max_len
        sparse = [SparseFeat("item_id", n_items, embedding_dim=dim),
                  SparseFeat("cate_id", n_cats, embedding_dim=dim)]
        combiner = "sum" if arch == "base" else "mean"
        prefixes = ["", "neg_"] if arch == "dien" else [""]
        hist = [VarLenSparseFeat(SparseFeat(f"{q}hist_{name}", n, embedding_dim=dim,
                                            embedding_name=name), t, combiner, "seq_length")
                for name, n in (("item_id", n_items), ("cate_id", n_cats)) for q in prefixes]
        columns = sparse + hist
        behaviour = ["item_id", "cate_id"]
        device = "cuda:0" if device == "cuda" else "cpu"
        torch.manual_seed(seed)
        l2_emb = params["l2_emb"]
        with contextlib.redirect_stdout(io.StringIO()):  # the library prints its device
            if arch == "base":
                self.model: Any = WDL(sparse, columns, device=device, seed=seed,
                                      l2_reg_embedding=l2_emb)
            elif arch == "din":
                self.model = DIN(columns, behaviour, device=device, seed=seed,
                                 l2_reg_embedding=l2_emb)
            else:
                self.model = DIEN(columns, behaviour, gru_type="AUGRU", use_negsampling=True,
                                  alpha=params["alpha"], device=device, seed=seed,
                                  l2_reg_embedding=l2_emb)
        self.model.compile(torch.optim.Adam(self.model.parameters(), lr=params["lr"]),
                           "binary_crossentropy")
        self.names = get_feature_names(columns)

    def _x(self, s: SampleSet) -> dict[str, np.ndarray]:
        x = _inputs(s, self.items, self.cats, self.arch == "dien")
        return {k: x[k] for k in self.names}

    def fit(self, s: SampleSet, epochs: int, batch_size: int,
            on_epoch: Any = None) -> float:
        """Train ``epochs`` epochs (one ``fit`` call each: its optimizer carries on); wall
        seconds of the fit calls. ``on_epoch(epochs_done)`` True stops early."""
        x, y, seconds = self._x(s), s.label.astype(np.float32), 0.0
        for epoch in range(epochs):
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                self.model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0, shuffle=True)
            seconds += time.perf_counter() - start
            if on_epoch is not None and on_epoch(epoch + 1):
                break
        return seconds

    def predict(self, s: SampleSet) -> np.ndarray:
        return self.model.predict(self._x(s), batch_size=4096).ravel().astype(np.float64)

    def evaluate(self, s: SampleSet) -> dict[str, float]:
        return ranking_metrics(s.user_id, s.label, self.predict(s))


def tune_peer(arch: str, p: Protocol, dim: int, batch_size: int, cfg: TuneConfig,
              device: str = "cpu") -> Tuned:
    """The peer's settings, searched as ours are (``models.tune.search``)."""
    fit_part, val = carve(p.train, cfg.val_frac)

    def run_trial(params: dict[str, Any], c: TuneConfig) -> EarlyStop:
        peer = Peer(arch, p, dim, params, c.seed, device)
        stop = EarlyStop(c.patience)
        peer.fit(fit_part, c.max_epochs, batch_size,
                 on_epoch=lambda _: stop.update(val_auc(val.label, peer.predict(val))))
        return stop

    return search(run_trial, peer_space(arch), peer_defaults(arch), cfg)


def run_peer(arch: str, p: Protocol, dim: int, batch_size: int, params: dict[str, Any],
             seed: int, device: str = "cpu") -> dict[str, Any]:
    """The peer trained on the protocol's train split with ``params``: its test metrics."""
    peer = Peer(arch, p, dim, params, seed, device)
    epochs = int(params["epochs"])
    seconds = peer.fit(p.train, epochs, batch_size)
    return {**peer.evaluate(p.test), "train_seconds": seconds,
            "train_samples_per_s": len(p.train) * epochs / seconds}
