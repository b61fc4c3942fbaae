"""The output of ``bench/unlearn_vs_retrain.py``: the Markdown tables, the avg-gap-vs-cost plot and
strict JSON (NaN as null)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

METRICS = ("forget_auc", "forget_f1", "test_auc", "test_f1", "mia", "mia_auc", "seconds")


def format_tables(result: dict[str, Any]) -> str:
    cols = ("forget AUC", "forget F1", "test AUC", "test F1", "MIA", "miaAUC", "seconds", "epochs", "cost", "avg gap")
    keys = (*METRICS, "epochs_run", "cost_ratio", "avg_gap")
    out = []
    for fraction, block in result["fractions"].items():
        out.append(f"\nforget fraction {fraction} (mean of {result['config']['seeds']} seeds)")
        out.append("| method | " + " | ".join(cols) + " |")
        out.append("|---" * (len(cols) + 1) + "|")
        rows = {"original": block["original"], **block["methods"]}
        for name, row in rows.items():
            cells = []
            for k in keys:
                v = row.get(k, math.nan)
                if math.isnan(v):
                    cells.append("-")
                elif k == "seconds":
                    cells.append(f"{v:.2f}")
                elif k == "epochs_run":
                    cells.append(f"{v:.1f}")
                elif k == "cost_ratio":
                    cells.append(f"{100 * v:.1f} %")
                else:
                    cells.append(f"{v:.3f}")
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    markers = dict(zip(result["fractions"], "os^Dv", strict=False))
    names = next(iter(result["fractions"].values()))["methods"]
    colours = dict(zip(names, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for fraction, block in result["fractions"].items():
        for name, row in block["methods"].items():
            if name == "retrain":
                continue
            ax.scatter(
                100 * row["cost_ratio"],
                row["avg_gap"],
                marker=markers[fraction],
                color=colours[name],
                label=f"{name} ({float(fraction):.0%})",
            )
    ax.axvline(5, color="grey", linestyle=":", linewidth=1)
    ax.set_xscale("log")
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.xaxis.set_major_formatter(plain)
    ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel("cost: seconds ÷ retrain seconds (%, log)")
    ax.set_ylabel("avg gap to the retrained model (lower is better)")
    where = result["config"].get("gpu") or result["config"].get("device", "cpu").upper()
    ax.set_title(f"Unlearning vs retraining ({result['config']['patients']} patients, {where})")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def json_safe(value: Any) -> Any:
    """NaN (a diverged method, an unmeasurable metric) becomes null, so the output is strict JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value
