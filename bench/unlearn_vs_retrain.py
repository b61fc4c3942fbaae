"""Forget-MI against retraining and the standard baselines: quality and cost side by side.

On the generated dataset (trainer/synthetic.py) this trains the original once per seed, then for
every forget fraction runs each method through the trainer's registry (``methods.get_method``),
timed in the same process on the same machine, and scores every model with the trainer's own
metrics (``scoring.model_metrics``: macro AUC/F1 of the image head, the paper's MIA and the
forget-vs-test attack AUC).

* ``retrain`` trains from scratch on the retain set with the original's recipe (``TrainConfig()``).
* ``forget-mi`` runs ``demo.DEMO_METHOD``, the recipe measured on this dataset.
* The baselines run the settings in :data:`BASELINES`, fixed before the first run (not tuned).

Per fraction it prints, averaged over seeds: forget AUC, forget F1, test AUC, test F1, MIA,
miaAUC, seconds, cost ratio (seconds ÷ retrain seconds of the same seed) and avg gap (mean
|x − x_retrained| over forget AUC, forget F1, test AUC and MIA, against the same seed's retrained
model). ``--json`` prints one JSON object on stdout instead of the tables; ``--out DIR`` writes
``results.json`` and ``gap_vs_cost.png`` there. ``--quick`` = 150 patients, fraction 0.10, 3 seeds
(127 s on 2 idle cores, 282 s without ``--quick``). Results and conclusions: bench/RESULTS.md.

    PYTHONSAFEPATH=1 .venv/bin/python bench/unlearn_vs_retrain.py --quick --out /tmp/bench
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forgetmi_trainer import data, synthetic
from forgetmi_trainer.contract import MethodConfig
from forgetmi_trainer.demo import DEMO_METHOD
from forgetmi_trainer.errors import DivergedError
from forgetmi_trainer.fit import MAX_TOKENS
from forgetmi_trainer.job import NOISY_TEXT_COPIES
from forgetmi_trainer.methods import MethodContext, get_method
from forgetmi_trainer.model import MultimodalConfig, build_model, tiny_bert_config
from forgetmi_trainer.runtime import seed_everything
from forgetmi_trainer.scoring import model_metrics
from forgetmi_trainer.tokenizer import build_tokenizer, build_vocabulary
from forgetmi_trainer.train import TrainConfig, train_model
from forgetmi_trainer.unlearn import UnlearnInputs

RECIPE = TrainConfig()  # the original's training recipe; retraining uses the same one
BASELINES = {
    # a few epochs over D_r at a third of the training peak learning rate
    "finetune": MethodConfig(name="finetune", epochs=5, learning_rate=1e-3, batch_size=64),
    # Forget-MI's step structure and epoch count (one epoch = one pass over D_f), default options
    "neggrad-plus": MethodConfig(name="neggrad-plus", epochs=30, learning_rate=1e-3, batch_size=16),
    # 5 epochs, max steps in the first 3, each min step a full pass over D_r, default options
    "scrub": MethodConfig(name="scrub", epochs=5, learning_rate=1e-3, batch_size=16),
}
METHODS = {
    "forget-mi": DEMO_METHOD,
    **BASELINES,
    "retrain": MethodConfig(
        name="retrain", epochs=RECIPE.epochs, learning_rate=RECIPE.learning_rate, batch_size=RECIPE.batch_size
    ),
}
METRICS = ("forget_auc", "forget_f1", "test_auc", "test_f1", "mia", "mia_auc", "seconds")
GAP_KEYS = ("forget_auc", "forget_f1", "test_auc", "mia")
QUICK = {"patients": 150, "fractions": "0.10", "seeds": 3}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--patients", type=int, default=150)
    p.add_argument("--fractions", default="0.03,0.06,0.10", help="forget fractions of the training samples")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1; every number is averaged over them")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"small run for 2 CPU cores: {QUICK['patients']} patients, fractions {QUICK['fractions']}, "
        f"{QUICK['seeds']} seeds (overrides the three options above)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout instead of the tables")
    p.add_argument("--out", type=Path, default=None, help="directory for results.json and gap_vs_cost.png")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (1: these tiny models gain nothing from more, and on a shared 2-core machine "
        "2 threads ran 12x slower than 1)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.patients, args.fractions, args.seeds = QUICK["patients"], QUICK["fractions"], QUICK["seeds"]
    args.fraction_list = [float(f) for f in str(args.fractions).split(",") if f.strip()]
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class World:
    """One seed's dataset, encoded once, and its original model."""

    def __init__(self, patients: int, seed: int, workdir: Path) -> None:
        self.seed = seed
        self.samples = synthetic.generate(synthetic.SynthParams(patients=patients, seed=seed))
        manifest_uri = synthetic.write_dataset(self.samples, (workdir / f"data-{seed}").as_uri())
        self.manifest = data.read_manifest(manifest_uri)
        self.tokenizer = build_tokenizer(
            build_vocabulary(self.manifest.texts), workdir / f"tok-{seed}", max_length=MAX_TOKENS
        )
        images = data.load_images(self.manifest.image_uris)
        self.encoded = data.encode(images, self.manifest.texts, self.manifest.labels, self.tokenizer, MAX_TOKENS)
        self.config = MultimodalConfig(
            num_labels=int(self.manifest.labels.max()) + 1,
            image_size=int(images.shape[-1]),
            image_channels=int(images.shape[1]),
            text_encoder_config=tiny_bert_config(len(self.tokenizer)),
        )
        train = np.asarray([i for i, s in enumerate(self.manifest.splits) if s == "train"])
        self.original = build_model(self.config, seed)
        start = time.perf_counter()
        train_model(
            self.original,
            self.encoded.take(train),
            RECIPE,
            generator=seed_everything(seed),
            device=torch.device("cpu"),
        )
        self.original_seconds = time.perf_counter() - start

    def inputs(self, fraction: float, noise_level: float) -> UnlearnInputs:
        subjects = synthetic.choose_forget_subjects(self.samples, fraction, self.seed)
        sets = data.split(self.manifest, subjects)
        forget, retain, test = (self.encoded.take(ix) for ix in (sets.forget, sets.retain, sets.test))
        pool = data.noisy_text_pool(
            [self.manifest.texts[i] for i in sets.forget],
            noise_level,
            NOISY_TEXT_COPIES,
            self.seed,
            str(self.tokenizer.mask_token),
        )
        noisy = [data.tokenize(self.tokenizer, p, MAX_TOKENS) for p in pool]
        return UnlearnInputs(forget, retain, test, noisy)  # type: ignore[arg-type]


def score(model: torch.nn.Module, inputs: UnlearnInputs, seed: int, seconds: float) -> dict[str, float]:
    metrics, _ = model_metrics(model, inputs.forget, inputs.retain, inputs.test, seed=seed)  # type: ignore[arg-type]
    s, m = metrics.split, metrics.mia
    values = {
        "forget_auc": s.forget_auc,
        "forget_f1": s.forget_f1,
        "test_auc": s.test_auc,
        "test_f1": s.test_f1,
        "mia": m.score,
        "mia_auc": m.attack_auc,
        "seconds": seconds,
    }
    return {k: math.nan if v is None else float(v) for k, v in values.items()}


def run_method(world: World, name: str, inputs: UnlearnInputs) -> dict[str, float]:
    method = METHODS[name]
    ctx = MethodContext(
        original=copy.deepcopy(world.original),
        inputs=inputs,
        method=method,
        generator=seed_everything(world.seed),
        device=torch.device("cpu"),
        precision="fp32",
        seed=world.seed,
    )
    try:
        result = get_method(method.name)(ctx)
    except DivergedError as err:
        log(f"  {name}: diverged ({err})")
        return {k: math.nan for k in METRICS}
    return score(result.model, inputs, world.seed, result.seconds)


def add_derived(rows: dict[str, dict[str, float]]) -> None:
    """cost_ratio and avg_gap of every row against the retrain row of the same seed."""
    ref = rows["retrain"]
    for row in rows.values():
        row["cost_ratio"] = row["seconds"] / ref["seconds"]
        row["avg_gap"] = float(np.mean([abs(row[k] - ref[k]) for k in GAP_KEYS]))


def mean_rows(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    names = per_seed[0].keys()
    return {n: {k: float(np.nanmean([r[n][k] for r in per_seed])) for k in per_seed[0][n]} for n in names}


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    per_fraction: dict[float, list[dict[str, dict[str, float]]]] = {f: [] for f in args.fraction_list}
    original_seconds = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="forgetmi-bench-") as tmp:
        for seed in range(args.seeds):
            world = World(args.patients, seed, Path(tmp))
            original_seconds.append(world.original_seconds)
            log(f"seed {seed}: original trained in {world.original_seconds:.1f}s")
            for fraction in args.fraction_list:
                inputs = world.inputs(fraction, DEMO_METHOD.noise.text_level)
                rows = {"original": score(world.original, inputs, seed, world.original_seconds)}
                for name in METHODS:
                    rows[name] = run_method(world, name, inputs)
                    log(f"  fraction {fraction:.2f} {name}: {rows[name]['seconds']:.1f}s")
                add_derived(rows)
                per_fraction[fraction].append(rows)
    result: dict[str, Any] = {
        "config": {
            "patients": args.patients,
            "seeds": args.seeds,
            "fractions": args.fraction_list,
            "threads": args.threads,
            "methods": {n: m.model_dump(mode="json") for n, m in METHODS.items()},
            "recipe": RECIPE.model_dump(mode="json"),
            "original_seconds": float(np.mean(original_seconds)),
            "wall_seconds": time.perf_counter() - t0,
        },
        "fractions": {},
    }
    for fraction, per_seed in per_fraction.items():
        rows = mean_rows(per_seed)
        result["fractions"][f"{fraction:.2f}"] = {
            "retrain_seconds": rows["retrain"]["seconds"],
            "methods": {n: rows[n] for n in METHODS},
            "original": rows["original"],
        }
    return result


def format_tables(result: dict[str, Any]) -> str:
    cols = ("forget AUC", "forget F1", "test AUC", "test F1", "MIA", "miaAUC", "seconds", "cost", "avg gap")
    keys = (*METRICS, "cost_ratio", "avg_gap")
    out = []
    for fraction, block in result["fractions"].items():
        out.append(f"\nforget fraction {fraction} (mean of {result['config']['seeds']} seeds)")
        out.append("| method | " + " | ".join(cols) + " |")
        out.append("|---" * (len(cols) + 1) + "|")
        rows = {"original": block["original"], **block["methods"]}
        for name, row in rows.items():
            cells = []
            for k in keys:
                v = row[k]
                if math.isnan(v):
                    cells.append("-")
                elif k == "seconds":
                    cells.append(f"{v:.2f}")
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
    colours = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
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
    ax.set_title(f"Unlearning vs retraining ({result['config']['patients']} patients, CPU)")
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(json_safe(result), indent=2))
        plot(result, args.out / "gap_vs_cost.png")
        log(f"wrote {args.out / 'results.json'} and {args.out / 'gap_vs_cost.png'}")
    if args.json:
        print(json.dumps(json_safe(result)))
    else:
        print(format_tables(result))
        print(f"\nwall time {result['config']['wall_seconds']:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
