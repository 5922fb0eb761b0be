"""The replay benchmark's plot: AUC per window, one line per policy (matplotlib, Agg).

Run: ``plot(result, Path("bench/results/replay_ml100k.png"))`` with the result dict of
:mod:`bench.replay` (``python -m bench.replay --plot PNG`` does it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after the backend is chosen

STYLE = {"static": ("tab:gray", "s", "-"), "incremental": ("tab:blue", "o", "-"),
         "full": ("tab:orange", "^", "-"), "top_refit": ("tab:green", "x", ":")}


def plot(result: dict[str, Any], path: Path) -> None:
    """AUC of each policy per window to ``path`` (PNG; folders made)."""
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=120)
    for policy, found in result["policies"].items():
        color, marker, line = STYLE[policy]
        auc = [float("nan") if v is None else v for v in found["auc"]]
        mean = found["mean"]["auc"]
        ax.plot(range(1, len(auc) + 1), auc, color=color, marker=marker, linestyle=line,
                label=f"{policy} (mean {mean:.4f}, {found['seconds']:.1f} s of updates)")
    proto = result["protocol"]
    gain, ratio = result["gain_recovered"], result["compute_ratio"]
    ax.set_title(f"Replay on {proto['data']} ({proto['arch']}): gain recovered "
                 f"{'n/a' if gain is None else f'{gain:.2f}'}, compute ratio "
                 f"{'n/a' if ratio is None else f'{ratio:.3f}'}", fontsize=10)
    ax.set_xlabel("window (scored before any update on it)")
    ax.set_ylabel("AUC")
    ax.set_xticks(range(1, len(result["windows"]) + 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
