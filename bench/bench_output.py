"""The output of ``bench/unlearn_vs_retrain.py``: the means and standard errors over seeds, the Markdown
tables, the avg-gap-vs-cost plot and strict JSON (NaN as null)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

METRICS = (
    "forget_auc", "forget_f1", "test_auc", "test_f1", "mia", "attack_auc", "attack_auc_signed", "tpr5",
    "logit_norm_auc", "lira_auc", "lira_tpr5", "patient_lira_auc", "seconds",
)
# (column, key) of the printed tables; every key of a row is in results.json
COLUMNS = (
    ("forget AUC", "forget_auc"), ("forget F1", "forget_f1"), ("test AUC", "test_auc"), ("test F1", "test_f1"),
    ("MIA", "mia"), ("attack AUC", "attack_auc"), ("signed", "attack_auc_signed"),
    ("logit-norm AUC", "logit_norm_auc"), ("loss TPR@5%", "tpr5"), ("LiRA AUC", "lira_auc"),
    ("LiRA TPR@5%", "lira_tpr5"), ("patient LiRA AUC", "patient_lira_auc"),
    ("seconds", "seconds"), ("epochs", "epochs_run"), ("passes", "sample_passes"), ("cost", "cost_ratio"),
    ("avg gap", "avg_gap"),
)


def mean_rows(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Per row name, the mean over seeds of every key (NaN ignored: a diverged seed) and, under ``se``,
    its standard error (sample SD ÷ sqrt(seeds measured); NaN with fewer than two)."""
    out: dict[str, dict[str, Any]] = {}
    for name in per_seed[0]:
        means: dict[str, Any] = {}
        errors: dict[str, float] = {}
        keys = dict.fromkeys(k for r in per_seed for k in r[name])  # a diverged seed's row has fewer keys
        for key in keys:
            values = np.asarray([r[name].get(key, math.nan) for r in per_seed], dtype=np.float64)
            finite = values[np.isfinite(values)]
            means[key] = float(finite.mean()) if finite.size else math.nan
            errors[key] = float(finite.std(ddof=1) / math.sqrt(finite.size)) if finite.size > 1 else math.nan
        out[name] = {**means, "se": errors}
    return out


def _cell(key: str, v: float) -> str:
    if math.isnan(v):
        return "-"
    if key == "seconds":
        return f"{v:.2f}"
    if key == "epochs_run":
        return f"{v:.1f}"
    if key == "sample_passes":
        return f"{v / 1000:.1f}k"
    if key == "cost_ratio":
        return f"{100 * v:.1f} %"
    return f"{v:.3f}"


def format_tables(result: dict[str, Any]) -> str:
    """One Markdown table per fraction: the mean over seeds, and ± its standard error on the avg gap."""
    out = []
    for fraction, block in result["fractions"].items():
        out.append(f"\nforget fraction {fraction} (mean of {result['config']['seeds']} seeds; avg gap ± SE)")
        out.append("| method | " + " | ".join(c for c, _ in COLUMNS) + " |")
        out.append("|---" * (len(COLUMNS) + 1) + "|")
        rows = {"original": block["original"], **block["methods"]}
        for name, row in rows.items():
            cells = [_cell(k, row.get(k, math.nan)) for _, k in COLUMNS]
            se = row.get("se", {}).get("avg_gap", math.nan)
            if name not in ("original", "retrain") and not math.isnan(se):
                cells[-1] += f" ± {se:.3f}"
            out.append(f"| {name} | " + " | ".join(cells) + " |")
        for name, record in block.get("tuned", {}).items():
            out.append(f"tuned {name}: {record['label']} (validation avg gap {_gap(record['validation_avg_gap'])})")
    return "\n".join(out)


def _gap(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


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
    """NaN (a diverged method, an unmeasurable metric, an SE of one seed) becomes null, so the output is
    strict JSON."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value
