"""A/B analysis of the ranking variants from the labelled samples (``recstream ab report``).

Run: ``recstream ab report`` (infra/ab_cli.py); in code ``analyse(read_topic(cfg))`` or
``analyse(read_parquet(dir))``; rendered by :mod:`stream.ab_report`. docs/ab.md.

Input: one row per sample (columns ``user_id``, ``label``, ``event_ts_ms``, ``variant``,
``model_version``), as the consumer writes them to the samples topic (:func:`read_topic`) and
the offline export keeps them as parquet (:func:`read_parquet`). A sample is one impression
(a lone click, which matched no impression, counts as a clicked impression, as in training);
its ``label`` is the click. Samples carry a variant only where the client sent ``variant``
back with its events (docs/events.md): rows without one are not in the experiment.

What :func:`analyse` computes (maths in :mod:`stream.ab_stats`), per variant and per
(variant, model version): users, impressions, clicks and the CTR as a ratio metric over users
with its delta-method 95% interval; per variant but the control, the relative lift over the
control with its interval and p-value; the sample-ratio-mismatch test of users per variant
against the weights (when it fires the report says it cannot be trusted); with a pre-period
frame, CUPED-adjusted CTRs and lifts with the variance reduction; and the CTR per variant in
equal time bins, with intervals, for the plot. Deterministic: the same rows give the same
report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stream import ab_stats as st
from stream.kafka import KafkaConfig, make_consumer
from stream.samples import decode_batch
from stream.topicread import iter_topic

COLUMNS = ("sample_id", "user_id", "item_id", "label", "event_ts_ms", "request_id", "variant",
           "model_version")
_RATIO_COLUMNS = ("users", "impressions", "clicks", "ctr", "ctr_se", "ctr_low", "ctr_high")


def _frame(columns: dict[str, list[Any]]) -> pd.DataFrame:
    """The analysis columns, one row per ``sample_id`` (the topic is at least once)."""
    frame = pd.DataFrame({c: columns.get(c, []) for c in COLUMNS})
    frame = frame.astype({"user_id": "int64", "label": "int64", "event_ts_ms": "int64"})
    return frame.drop_duplicates("sample_id", keep="first").reset_index(drop=True)


def read_topic(cfg: KafkaConfig, topic: str | None = None) -> pd.DataFrame:
    """Every sample on the samples topic (``cfg.topics.samples``), read to the true end of
    each partition with an assigned, group-less consumer (nothing committed)."""
    topic = topic or cfg.topics.samples
    columns: dict[str, list[Any]] = {c: [] for c in COLUMNS}
    reader = make_consumer(cfg, None)
    try:
        for rec in iter_topic(reader, topic):
            for sample in decode_batch(rec.value or b"{}"):
                for c in COLUMNS:
                    columns[c].append(sample.get(c))
    finally:
        reader.close()
    return _frame(columns)


def read_parquet(directory: Path) -> pd.DataFrame:
    """The samples of the offline export in ``directory`` (stream.offline.read_samples)."""
    from stream.offline import read_samples

    found = read_samples(directory)
    return _frame({c: found[c].tolist() if c in found else [None] * len(found)
                   for c in COLUMNS})


def split_period(frame: pd.DataFrame, since_ms: int | None, pre_start_ms: int | None = None
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(experiment, pre-period)``: rows from ``since_ms`` on, and rows before it (from
    ``pre_start_ms`` on, any variant or none); everything and nothing without ``since_ms``."""
    if since_ms is None:
        return frame, frame.iloc[:0]
    ts = frame["event_ts_ms"]
    pre = (ts < since_ms) & (ts >= (pre_start_ms if pre_start_ms is not None else ts.min()))
    return frame[ts >= since_ms], frame[pre]


def per_user(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """One row per ``keys`` + user: ``impressions`` (samples) and ``clicks`` (labels)."""
    got = frame.groupby([*keys, "user_id"], dropna=False, sort=True)["label"].agg(["size", "sum"])
    return got.rename(columns={"size": "impressions", "sum": "clicks"}).reset_index()


def summarize(units: pd.DataFrame, keys: list[str], alpha: float = 0.05) -> pd.DataFrame:
    """Per group of ``keys``: users, impressions, clicks and the ratio CTR with its
    delta-method standard error and interval, from the groups' moment sums."""
    x, y = units["impressions"].astype(float), units["clicks"].astype(float)
    parts = pd.DataFrame({"n": 1.0, "sx": x, "sy": y, "sxx": x * x, "syy": y * y, "sxy": x * y})
    sums = parts.groupby([units[k] for k in keys], dropna=False, sort=True).sum()
    ratio = st.ratio_from_sums(*(sums[c].to_numpy() for c in ("n", "sx", "sy", "sxx", "syy",
                                                               "sxy")))
    low, high = st.interval(ratio.value, ratio.se, alpha)
    out = pd.DataFrame({"users": sums["n"].astype(int), "impressions": sums["sx"].astype(int),
                        "clicks": sums["sy"].astype(int), "ctr": ratio.value,
                        "ctr_se": ratio.se, "ctr_low": low, "ctr_high": high},
                       index=sums.index)
    return out.reset_index()


def resolve_weights(seen: list[str], given: dict[str, float] | None,
                    configured: dict[str, float] | None) -> tuple[dict[str, float], str,
                                                                 list[str]]:
    """The weights the SRM test checks against: ``(weights, where from, warnings)``.

    ``given`` (``--weights``) must name every variant seen. The serving config's weights
    are used when its live variants (weight > 0) include every variant seen; a live one
    without users then counts as 0 observed. Else equal weights over the variants seen."""
    if given is not None:
        missing = sorted(set(seen) - set(given))
        if missing:
            raise ValueError(f"--weights has no weight for variant(s) {missing} in the data")
        return dict(sorted(given.items())), "--weights", []
    if configured:
        live = {k: v for k, v in sorted(configured.items()) if v > 0}
        if set(seen) <= set(live):
            notes = [f"configured variant {k} has no samples" for k in live if k not in seen]
            return live, "serving config", notes
        note = (f"the serving config's variants {sorted(configured)} do not cover the "
                f"variants seen {seen}: SRM checked against equal weights")
        return dict.fromkeys(seen, 1 / len(seen)), "equal (seen)", [note]
    return dict.fromkeys(seen, 1 / len(seen)), "equal (seen)", []


def _lift(lift: st.Lift, i: int) -> dict[str, float]:
    return {"lift": float(lift.lift[i]), "se": float(lift.se[i]), "low": float(lift.low[i]),
            "high": float(lift.high[i]), "p_value": float(lift.p_value[i])}


def _cuped(units: pd.DataFrame, pre: pd.DataFrame, names: list[str], control: int,
           alpha: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """CUPED over the variants' users: the pre-period linearisation of each user's CTR
    (over all the experiment's users) as the covariate."""
    pre_users = per_user(pre, []).set_index("user_id")
    px = units["user_id"].map(pre_users["impressions"]).fillna(0).to_numpy(float)
    py = units["user_id"].map(pre_users["clicks"]).fillna(0).to_numpy(float)
    _, m = st.linearize(py, px)
    by = [units["variant"].to_numpy() == v for v in names]
    y, x = units["clicks"].to_numpy(float), units["impressions"].to_numpy(float)
    cu = st.cuped([y[b] for b in by], [x[b] for b in by], [m[b] for b in by])
    low, high = st.interval(cu.ratio.value, cu.ratio.se, alpha)
    ctl = st.Ratio(cu.ratio.value[[control]], cu.ratio.se[[control]], cu.ratio.n[[control]])
    lift = st.relative_lift(cu.ratio, ctl, alpha)
    rows = [{"ctr": float(cu.ratio.value[i]), "ctr_se": float(cu.ratio.se[i]),
             "ctr_low": float(low[i]), "ctr_high": float(high[i]),
             "variance_reduction": float(cu.variance_reduction[i]),
             "lift": None if i == control else _lift(lift, i)} for i in range(len(names))]
    summary = {"theta": cu.theta, "pre_samples": len(pre),
               "users_with_pre_period": int((px > 0).sum())}
    return summary, rows


def over_time(rows: pd.DataFrame, bins: int, alpha: float = 0.05) -> list[dict[str, Any]]:
    """CTR per variant in ``bins`` equal time bins (users active in a bin as the units)."""
    if rows.empty:
        return []
    t0, t1 = int(rows["event_ts_ms"].min()), int(rows["event_ts_ms"].max()) + 1
    edges = np.linspace(t0, t1, bins + 1)
    idx = np.clip(np.searchsorted(edges, rows["event_ts_ms"], side="right") - 1, 0, bins - 1)
    table = summarize(per_user(rows.assign(bin=idx), ["variant", "bin"]), ["variant", "bin"],
                      alpha)
    return [{"variant": r.variant, "start_ms": int(edges[r.bin]),
             "end_ms": int(edges[r.bin + 1]), "users": int(r.users),
             "impressions": int(r.impressions), "clicks": int(r.clicks), "ctr": r.ctr,
             "ctr_low": r.ctr_low, "ctr_high": r.ctr_high} for r in table.itertuples()]


def _records(table: pd.DataFrame, keys: list[str]) -> list[dict[str, Any]]:
    return [{**{k: (None if pd.isna(r[k]) else r[k]) for k in keys},
             **{c: (int(r[c]) if c in ("users", "impressions", "clicks") else float(r[c]))
                for c in _RATIO_COLUMNS}} for r in table.to_dict("records")]


def analyse(frame: pd.DataFrame, *, weights: dict[str, float] | None = None,
            configured: dict[str, float] | None = None, control: str | None = None,
            pre: pd.DataFrame | None = None, alpha: float = 0.05, bins: int = 24
            ) -> dict[str, Any]:
    """The report of ``frame``'s experiment (module doc) as a JSON-ready dict (NaN as
    None); ``pre``: the pre-period samples for CUPED (None: no CUPED)."""
    rows = frame[frame["variant"].notna()]
    warnings: list[str] = []
    if rows.empty:
        warnings.append("no sample carries a variant: the clients must send `variant` back "
                        "with their events (docs/events.md)")
    units = per_user(rows, ["variant"])
    names = sorted(units["variant"].unique().tolist())
    control = control if control is not None else (names[0] if names else None)
    if control is not None and names and control not in names:
        raise ValueError(f"control {control!r} is not among the variants seen {names}")
    table = summarize(units, ["variant"], alpha)
    variants = _records(table, ["variant"])
    if names:
        ci = names.index(str(control))
        ratio = st.Ratio(*(table[c].to_numpy(float) for c in ("ctr", "ctr_se", "users")))
        ctl = st.Ratio(ratio.value[[ci]], ratio.se[[ci]], ratio.n[[ci]])
        lift = st.relative_lift(ratio, ctl, alpha)
        for i, row in enumerate(variants):
            row["lift"] = None if i == ci else _lift(lift, i)
    resolved, source, notes = (resolve_weights(names, weights, configured) if names
                               else ({}, "none", []))
    warnings += notes
    srm = None
    if len(resolved) >= 2:
        observed = [int((units["variant"] == v).sum()) for v in resolved]
        test = st.srm_test(observed, list(resolved.values()))
        srm = {"chi2": test.chi2, "p_value": test.p_value, "flagged": test.flagged,
               "alpha": st.SRM_ALPHA, "observed": dict(zip(resolved, observed, strict=True)),
               "expected": dict(zip(resolved, test.expected.tolist(), strict=True))}
        if test.flagged:
            warnings.insert(0, f"SAMPLE RATIO MISMATCH (p = {test.p_value:.2g} < "
                               f"{st.SRM_ALPHA}): users per variant do not match the weights "
                               "(" + source + "); the result cannot be trusted")
    crossed = int((units.groupby("user_id")["variant"].nunique() > 1).sum())
    if crossed:
        warnings.append(f"{crossed} users have samples of several variants (weights changed "
                        "during the test?): each counts in every variant it saw")
    cuped = None
    if pre is not None and names:
        cuped, adjusted = _cuped(units, pre, names, names.index(str(control)), alpha)
        for row, adj in zip(variants, adjusted, strict=True):
            row["cuped"] = adj
    report = {
        "alpha": alpha, "samples": len(frame), "samples_in_experiment": len(rows),
        "control": control, "weights": resolved, "weights_source": source,
        "variants": variants,
        "model_versions": _records(summarize(per_user(rows, ["variant", "model_version"]),
                                             ["variant", "model_version"], alpha),
                                   ["variant", "model_version"]),
        "srm": srm, "cuped": cuped, "users_in_several_variants": crossed,
        "trustworthy": not (srm and srm["flagged"]), "warnings": warnings,
        "over_time": over_time(rows, bins, alpha),
    }
    return _clean(report)


def _clean(value: Any) -> Any:
    """``value`` with numpy scalars as Python numbers and NaN / inf as None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value
