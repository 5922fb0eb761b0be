"""How an A/B report (:func:`stream.ab.analyse`) is shown: rich tables, JSON, a PNG.

Run: by ``recstream ab report`` (infra/ab_cli.py): :func:`print_report` on the terminal,
:func:`to_json` for ``--json``, :func:`plot` for ``--plot PNG`` (matplotlib, Agg backend: CTR
per variant over time with its 95% interval band).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table


def to_json(report: dict[str, Any]) -> str:
    """The report as one strict JSON document (NaN never appears: it is null)."""
    return json.dumps(report, indent=2, allow_nan=False)


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{100 * x:.{digits}f}%"


def _ci(low: float | None, high: float | None) -> str:
    return "n/a" if low is None or high is None else f"[{_pct(low)}, {_pct(high)}]"


def _p(p: float | None) -> str:
    return "n/a" if p is None else f"{p:.2g}" if p < 0.001 else f"{p:.3f}"


def print_report(report: dict[str, Any], console: Console) -> None:
    """Variants (with lift vs the control, and CUPED when computed), model versions, SRM."""
    conf = f"{100 * (1 - report['alpha']):.0f}%"
    cuped = report["cuped"] is not None
    t = Table("variant", "users", "impressions", "clicks", "CTR", f"CTR {conf} CI",
              "lift vs control", f"lift {conf} CI", "p", *(["CUPED lift", "CUPED CI", "CUPED p",
                                                           "var. reduction"] if cuped else []),
              title=f"A/B report: control {report['control']}, "
                    f"{report['samples_in_experiment']} samples in the experiment")
    for v in report["variants"]:
        lift = v.get("lift")
        cells = ["(control)", "", ""] if lift is None else [
            _pct(lift["lift"]), _ci(lift["low"], lift["high"]), _p(lift["p_value"])]
        if cuped:
            c = v["cuped"]
            cl = c["lift"]
            cells += (["(control)", "", ""] if cl is None else
                      [_pct(cl["lift"]), _ci(cl["low"], cl["high"]), _p(cl["p_value"])])
            cells.append(_pct(c["variance_reduction"], 1))
        t.add_row(v["variant"], str(v["users"]), str(v["impressions"]), str(v["clicks"]),
                  _pct(v["ctr"], 3), _ci(v["ctr_low"], v["ctr_high"]), *cells)
    console.print(t)
    mv = Table("variant", "model version", "users", "impressions", "clicks", "CTR",
               f"CTR {conf} CI", title="by model version")
    for r in report["model_versions"]:
        mv.add_row(r["variant"], r["model_version"] or "-", str(r["users"]),
                   str(r["impressions"]), str(r["clicks"]), _pct(r["ctr"], 3),
                   _ci(r["ctr_low"], r["ctr_high"]))
    console.print(mv)
    online = report.get("online")
    if online is not None:
        on = Table("variant", "model version", "impressions scored", "clicks", "AUC",
                   title="online AUC of the served scores (each variant on its own shown items)")
        for r in online["model_versions"]:
            on.add_row(r["variant"], r["model_version"], str(r["impressions"]),
                       str(r["clicks"]), "-" if r["auc"] is None else f"{r['auc']:.4f}")
        for name, r in online["variants"].items():
            on.add_row(f"[bold]{name}[/bold]", "(all)", str(r["impressions"]),
                       str(r["clicks"]), "-" if r["auc"] is None else f"{r['auc']:.4f}")
        console.print(on)
    srm = report["srm"]
    if srm is not None:
        weights = ", ".join(f"{k}={w:g}" for k, w in report["weights"].items())
        users = ", ".join(f"{k}={n}" for k, n in srm["observed"].items())
        console.print(f"SRM: users {users} against weights {weights} "
                      f"({report['weights_source']}): chi2 = {srm['chi2']:.2f}, "
                      f"p = {_p(srm['p_value'])}"
                      + (" [bold red]FLAGGED[/bold red]" if srm["flagged"] else " ok"))
    if cuped:
        c = report["cuped"]
        console.print(f"CUPED: theta = {c['theta']:.4g}, {c['users_with_pre_period']} users "
                      f"with pre-period samples ({c['pre_samples']} samples)")
    for w in report["warnings"]:
        style = "bold red" if w.startswith("SAMPLE RATIO MISMATCH") else "yellow"
        console.print(f"[{style}]{w}[/{style}]", markup=True, highlight=False)


def plot(report: dict[str, Any], path: Path) -> None:
    """CTR per variant in each time bin with its interval band, to ``path`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(9, 4.5), dpi=120)
    for v in report["variants"]:
        pts = [p for p in report["over_time"] if p["variant"] == v["variant"]]
        mid = np.array([(p["start_ms"] + p["end_ms"]) // 2 for p in pts], dtype="datetime64[ms]")
        ctr, low, high = (np.array([np.nan if p[k] is None else p[k] for p in pts], dtype=float)
                          for k in ("ctr", "ctr_low", "ctr_high"))
        (line,) = ax.plot(mid, ctr, marker="o", markersize=3,
                          label=f"{v['variant']} (CTR {_pct(v['ctr'], 3)})")
        ax.fill_between(mid, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
    conf = f"{100 * (1 - report['alpha']):.0f}%"
    title = f"CTR per variant over time, {conf} interval bands (control {report['control']})"
    if not report["trustworthy"]:
        title += ": SAMPLE RATIO MISMATCH, not to be trusted"
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("event time (UTC)")
    ax.set_ylabel("CTR")
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
    ax.grid(alpha=0.3)
    if report["variants"]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
