"""The live loop's report: the JSON of ``recstream bench loop`` and its plot.

Run: ``report(run_loop(...))`` -> dict; ``plot(raw, png)``. CTR per arm, lift and SRM come from
the samples topic through the A/B analysis (stream/ab.py); the true expected CTRs (what each
arm showed, the oracle's top k, a random k) from the simulator's own record of each request;
the online AUC of each arm's served scores from the ``predictions`` topic joined to the labels.
``gap_closed`` = (incremental - static) / (oracle - static), on the true expected CTRs of the
requests each arm served (less noisy than the clicks; the clicks' CTR is reported beside).
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

TARGETS = {"lift_ci_excludes_0": True, "model_freshness_p50_s_max": 10.0,
           "model_freshness_p99_s_max": 30.0, "failed_requests_max": 0, "lost_max": 0,
           "duplicated_max": 0}


def _served(raw: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame([vars(s) for s in raw["clients"].served])


def freshness(raw: dict[str, Any], served: pd.DataFrame) -> dict[str, float | int | None]:
    """Request time minus the newest sample's event time of the version that scored it, on
    the incremental arm: ``p50``/``p99`` over the versions the trainer published (the loop's
    freshness, the target), ``p99_all`` also over the requests the first model scored before
    the first update was served, and ``first_model_age_s``, that model's age when the clients
    started (the benchmark's set-up time after its pre-period: training, Ray, Serve)."""
    reg, clients = raw["registry"], raw["clients"]
    newest: dict[str, float | None] = {}
    for m in reg.versions("din"):
        ts = (m.get("sample_range") or {}).get("newest_event_ts_ms")
        newest[m["version"]] = ts / 1000 if ts is not None else None
    rows = served[served.ok & (served.variant == "incremental")]
    wall0 = clients.wall_start
    scored = [(wall0 + t - ts, v != raw.get("first")) for t, v in
              zip(rows.t_s, rows.model_version, strict=True)
              if (ts := newest.get(v)) is not None]
    ages = np.array([age for age, _ in scored])
    loop = np.array([age for age, published in scored if published])
    first = newest.get(raw.get("first") or "")
    out: dict[str, float | None] = {
        "p50": None, "p99": None, "p99_all": None,
        "first_model_age_s": wall0 - first if first is not None else None,
        "first_model_requests": len(ages) - len(loop)}
    if len(loop):
        out |= {"p50": float(np.percentile(loop, 50)), "p99": float(np.percentile(loop, 99))}
    if len(ages):
        out["p99_all"] = float(np.percentile(ages, 99))
    return out


def _stream_checks(raw: dict[str, Any]) -> dict[str, int]:
    """Impressions the clients sent that have no sample, and those with more than one."""
    samples = raw["samples"].dropna(subset=["request_id"])
    per = samples.groupby(["request_id", "item_id"]).size()
    sent = raw["clients"].impressions
    return {"lost": int(max(sent - len(per), 0)), "duplicated": int((per > 1).sum()),
            "impressions_sent": int(sent), "samples": len(samples)}


def online_auc(raw: dict[str, Any]) -> dict[str, dict[str, float | int | None]]:
    """Per arm, the AUC and GAUC of the served scores (the ``predictions`` topic) against the
    clicks (the samples topic), joined on (request_id, user_id, item_id) as ``recstream ab
    report --online`` joins them (:mod:`stream.ab_online`): how well each arm ranked what it showed,
    measured on the live traffic."""
    from models.metrics import gauc
    from stream.ab_online import auc_by_variant, join_scores

    preds = raw.get("predictions")
    if preds is None or not len(preds):
        return {}
    joined = join_scores(preds, raw["samples"])
    aucs = auc_by_variant(joined)
    out: dict[str, dict[str, float | int | None]] = {}
    for arm, rows in joined.groupby("variant"):
        auc = aucs[str(arm)]
        out[str(arm)] = {"auc": auc["auc"], "impressions": auc["impressions"],
                         "gauc": gauc(rows.user_id.to_numpy(), rows.label.to_numpy(),
                                      rows.score.to_numpy()) if auc["auc"] is not None
                         else None}
    return out


def _update_seconds(reg: Any) -> dict[str, float | None]:
    """p50 / p99 of the promoted updates' own seconds (split, fine-tune, guard: the manifest's
    ``update_seconds``)."""
    secs = [m["extra"]["update_seconds"] for m in reg.versions("din")
            if "update_seconds" in (m.get("extra") or {})]
    pct = (lambda q: float(np.percentile(secs, q))) if secs else (lambda q: None)
    return {"update_seconds_p50": pct(50), "update_seconds_p99": pct(99)}


def _cuped(arms: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The lift with CUPED (each user's CTR in the logged pre-period as the covariate,
    docs/ab.md) and the variance each arm lost to it; None without a pre-period."""
    inc = (arms.get("incremental") or {}).get("cuped") or {}
    lift = inc.get("lift") or {}
    return {"lift_cuped": lift.get("lift"), "lift_cuped_ci95": [lift.get("low"),
                                                                 lift.get("high")],
            "lift_cuped_p": lift.get("p_value"),
            "cuped_variance_reduction": {name: (row.get("cuped") or {}).get(
                "variance_reduction") for name, row in arms.items()}}


def report(raw: dict[str, Any]) -> dict[str, Any]:
    """The JSON of the run (see the module docstring)."""
    from stream.ab import analyse

    served = _served(raw)
    ok = served[served.ok]
    logged = raw.get("logged")  # the pre-period: the first model's logged impressions
    ab = analyse(raw["samples"], configured={"static": 0.5, "incremental": 0.5},
                 control="static", pre=logged[["user_id", "label"]] if logged is not None
                 else None)
    arms = {row["variant"]: row for row in ab["variants"]}
    expected = ok.groupby("variant")[["shown_p", "oracle_p", "random_p"]].mean()
    static = float(expected.loc["static", "shown_p"])
    inc = float(expected.loc["incremental", "shown_p"])
    oracle, rand = float(ok.oracle_p.mean()), float(ok.random_p.mean())
    lift = (arms.get("incremental") or {}).get("lift") or {}
    reg = raw["registry"]
    rejections: dict[str, int] = {}
    for r in reg.rejections("din"):
        rejections[r["reason"]] = rejections.get(r["reason"], 0) + 1
    fresh = freshness(raw, served)
    checks = _stream_checks(raw)
    result: dict[str, Any] = {
        "arms": {name: {"ctr": arms[name]["ctr"], "ctr_ci95": [arms[name]["ctr_low"],
                                                               arms[name]["ctr_high"]],
                        "users": arms[name]["users"], "impressions": arms[name]["impressions"],
                        "clicks": arms[name]["clicks"],
                        "expected_ctr": float(expected.loc[name, "shown_p"]),
                        "requests": int((ok.variant == name).sum())}
                 for name in ("static", "incremental") if name in arms},
        "online_auc": online_auc(raw),
        "lift": lift.get("lift"), "lift_ci95": [lift.get("low"), lift.get("high")],
        "lift_p": lift.get("p_value"), **_cuped(arms),
        "srm_p": (ab.get("srm") or {}).get("p_value"),
        "oracle_ctr": oracle, "random_ctr": rand,
        "gap_closed": (inc - static) / (oracle - static) if oracle > static else None,
        "promotions": len(reg.versions("din")) - 1, "rejections": rejections,
        **_update_seconds(reg),
        "model_freshness_p50_s": fresh["p50"], "model_freshness_p99_s": fresh["p99"],
        "model_freshness_p99_with_first_model_s": fresh["p99_all"],
        "first_model_age_at_start_s": fresh["first_model_age_s"],
        "first_model_requests": fresh["first_model_requests"],
        "requests": len(served), "failed_requests": int((~served.ok).sum()),
        **checks,
        "settings": {"minutes": raw["minutes"], "train_interval_s": raw["interval_s"],
                     "world": vars(raw["world"]) if hasattr(raw["world"], "__dict__")
                     else str(raw["world"])},
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
    }
    low, low_cuped = result["lift_ci95"][0], result["lift_cuped_ci95"][0]
    result["targets"] = {**TARGETS, "met": {
        "lift_ci_excludes_0": low is not None and low > 0,
        "lift_cuped_ci_excludes_0": low_cuped is not None and low_cuped > 0,
        "model_freshness": fresh["p50"] is not None and fresh["p50"] <= 10.0
        and fresh["p99"] is not None and fresh["p99"] <= 30.0,
        "failed_requests": result["failed_requests"] == 0,
        "lost_and_duplicated": checks["lost"] == 0 and checks["duplicated"] == 0}}
    return result


def plot(raw: dict[str, Any], png: Path, bin_s: float = 30.0) -> None:
    """The true expected CTR per arm over time, with the oracle's and a random ranking's."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    served = _served(raw)
    ok = served[served.ok].assign(bin=lambda f: (f.t_s // bin_s) * bin_s / 60)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, style in (("static", "-"), ("incremental", "-")):
        arm = ok[ok.variant == name].groupby("bin").shown_p.mean()
        ax.plot(arm.index, arm.values, style, label=name)
    ax.plot(*_series(ok.groupby("bin").oracle_p.mean()), "k--", label="oracle (true top 5)")
    ax.plot(*_series(ok.groupby("bin").random_p.mean()), "k:", label="random 5")
    world, end = raw["world"], float(ok.t_s.max()) if len(ok) else 0.0
    for t in np.arange(world.trend_period_s, end, world.trend_period_s):
        ax.axvline(t / 60, color="0.85", lw=0.8, zorder=0)
    for t, what in ((world.new_items_at_s, "new items"), (world.shift_at_s, "recency shift")):
        if t < end:
            ax.axvline(t / 60, color="0.5", ls="--", lw=0.8)
            ax.annotate(what, (t / 60, ax.get_ylim()[0]), rotation=90, fontsize=8,
                        va="bottom", ha="right", color="0.4")
    ax.set_xlabel("minutes (grey lines: a new set of hot categories)")
    ax.set_ylabel(f"true expected CTR of the shown items ({bin_s:.0f} s bins)")
    ax.set_title("recstream live loop: static vs incremental top network")
    ax.legend(loc="best")
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _series(s: pd.Series) -> tuple[Any, Any]:
    return s.index, s.values
