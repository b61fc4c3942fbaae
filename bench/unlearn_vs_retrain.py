"""Forget-MI against retraining and the standard baselines: quality and cost side by side.

On the generated dataset (trainer/synthetic.py) this trains the original once per seed, then for
every forget fraction runs each method through the trainer's registry (``methods.get_method``),
timed in the same process on the same machine, and scores every model with the trainer's own
metrics (``evaluate.model_metrics``: macro AUC/F1 of the image head, the paper's MIA and the
forget-vs-test attack AUC).

* ``retrain`` trains from scratch on the retain set with the original's recipe (``TrainConfig()``).
* ``forget-mi`` runs ``demo.DEMO_METHOD``, the recipe measured on this dataset.
* The baselines run the settings in :data:`BASELINES`, fixed before the first run (not tuned).
* ``--selection`` (every method but ``retrain`` alike): ``ForgetReachesTest`` (the default) stops a
  method after the first epoch whose mean forget-set loss reaches the mean test-set loss (its
  planned epochs are the cap), the selection rule FORGET_MI.md §9 counts into the cost floor;
  ``FixedEpoch`` runs every planned epoch.

Per fraction it prints, averaged over seeds: forget AUC, forget F1, test AUC, test F1, MIA,
miaAUC, seconds, epochs run, cost ratio (seconds ÷ retrain seconds of the same seed) and avg gap (mean
|x − x_retrained| over forget AUC, forget F1, test AUC and MIA, against the same seed's retrained
model). ``--json`` prints one JSON object on stdout instead of the tables; ``--out DIR`` writes
``results.json`` and ``gap_vs_cost.png`` there (and ``partial.json`` after every method, so a run
cut short still leaves its finished rows). ``--quick`` = 150 patients, fraction 0.10, 3 seeds
(37 s on 2 idle Intel Xeon cores, 87 s without ``--quick``; 127 s and 282 s on the slower
machine of 2026-11-28). Results and conclusions: bench/RESULTS.md.

``--scale small`` (the default) is the CPU benchmark above: 16 px images, the small CNN and a
one-layer 32-d BERT. ``--scale paper`` is the paper-like preset for a GPU: a ResNet-18-shaped
image encoder (``transformers`` ``ResNetConfig``, depths 2-2-2-2, widths 64-128-256-512, one input
channel, random init), a BERT-base-sized text encoder (768 hidden, 12 layers, 12 heads, 3072
intermediate, random init, the bench's own vocabulary), 256 px images and 1,100 patients
(3-8 samples each, mean 5.5: ≈ 6,050 samples, ≈ 4,840 of them training). ``--image-size``,
``--patients``, ``--image-encoder``, ``--text-encoder`` and ``--text-layers`` override single
parts, so a CPU smoke run can use the paper's model classes on tiny data. ``--device`` and
``--precision`` resolve as the trainer's Job does (``runtime.resolve_device`` /
``resolve_precision``: auto = CUDA with bf16 autocast when a GPU is visible, else CPU fp32).
``--epochs`` shortens the recipe of the original *and* of ``retrain`` (FORGET_MI.md §9: the
same recipe for both); ``--time-budget`` picks that number itself from a timed calibration run
(see ``bench_scales.budget_epochs``). Any shortening is printed and recorded in ``results.json``
(``config.recipe`` and ``config.recipe_epochs_reduced_from``). bench/gpu_paper_run.sh is the
prepared one-command GPU run; bench/RESULTS.md holds its time estimate.

    PYTHONSAFEPATH=1 .venv/bin/python bench/unlearn_vs_retrain.py --quick --out /tmp/bench
    PYTHONSAFEPATH=1 .venv/bin/python bench/unlearn_vs_retrain.py --scale paper --device cpu \
        --image-size 64 --patients 12 --text-layers 1 --epochs 2 --seeds 1 --fractions 0.10 --out /tmp/smoke
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
from forgetmi_trainer.contract import DataConfig, MethodConfig, SelectionRule
from forgetmi_trainer.data import Encoded
from forgetmi_trainer.demo import DEMO_METHOD
from forgetmi_trainer.encoders import TINY_TEXT_LENGTH
from forgetmi_trainer.errors import DivergedError
from forgetmi_trainer.evaluate import Scored, model_metrics
from forgetmi_trainer.inference import image_logits
from forgetmi_trainer.job import NOISY_TEXT_COPIES
from forgetmi_trainer.manifest import Manifest, read_manifest, split
from forgetmi_trainer.methods import MethodContext, UnlearnInputs, get_method
from forgetmi_trainer.model import build_model
from forgetmi_trainer.preprocess import ImagePreprocessing
from forgetmi_trainer.runtime import resolve_device, resolve_precision, seed_everything
from forgetmi_trainer.streaming import SampleStream, native_shape
from forgetmi_trainer.tokenizer import build_tokenizer, build_vocabulary
from forgetmi_trainer.train import TrainConfig, train_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench's own modules (run with -P)
from bench_output import METRICS, format_tables, json_safe, plot
from bench_scales import SCALES, budget_epochs, environment, model_config

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
GAP_KEYS = ("forget_auc", "forget_f1", "test_auc", "mia")
QUICK = {"patients": 150, "fractions": "0.10", "seeds": 3}
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--scale",
        choices=tuple(SCALES),
        default="small",
        help="small: the CPU benchmark (16 px, small CNN, 1-layer BERT); paper: ResNet-18-shaped image "
        "encoder, BERT-base-sized text encoder, 256 px, 1,100 patients (≈ 6,050 samples)",
    )
    p.add_argument("--patients", type=int, default=None, help="default: the scale's (150 small, 1100 paper)")
    p.add_argument("--image-size", type=int, default=None, help="default: the scale's (16 small, 256 paper)")
    p.add_argument("--image-encoder", choices=("cnn", "resnet"), default=None, help="default: the scale's")
    p.add_argument("--text-encoder", choices=("tiny", "bert-base"), default=None, help="default: the scale's")
    p.add_argument(
        "--text-layers", type=int, default=None, help="layers of the bert-base encoder (default 12)"
    )
    p.add_argument("--fractions", default="0.03,0.06,0.10", help="forget fractions of the training samples")
    p.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1; every number is averaged over them")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"small run for 2 CPU cores: {QUICK['patients']} patients, fractions {QUICK['fractions']}, "
        f"{QUICK['seeds']} seeds (overrides the three options above)",
    )
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when available")
    p.add_argument(
        "--precision", choices=("auto", "fp32", "bf16"), default="auto", help="auto: bf16 autocast on CUDA, fp32 on CPU"
    )
    p.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"epochs of the original's recipe and of retrain (default {RECIPE.epochs}); a shortening is recorded",
    )
    p.add_argument(
        "--time-budget",
        type=float,
        default=None,
        help="seconds for the whole run: time two calibration epochs, then shorten the recipe (original and "
        "retrain alike) so that the estimate fits; never lengthens it",
    )
    p.add_argument(
        "--selection",
        choices=("ForgetReachesTest", "FixedEpoch"),
        default="ForgetReachesTest",
        help="checkpoint rule of every method but retrain: stop once the forget-set loss reaches the test-set "
        "loss (default), or run every planned epoch",
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
    for key, value in SCALES[args.scale].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.patients, args.fractions, args.seeds = QUICK["patients"], QUICK["fractions"], QUICK["seeds"]
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be at least 1")
    if args.image_encoder == "resnet" and args.image_size < 64:
        # ResNet downsamples 32x: below 64 px its last stage is 1x1, and BatchNorm in training mode
        # refuses a final batch of one sample (SCRUB's and finetune's retain batches can end so).
        p.error("--image-size must be at least 64 with the resnet image encoder")
    args.fraction_list = [float(f) for f in str(args.fractions).split(",") if f.strip()]
    return args


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def read_all(manifest: Manifest, manifest_uri: str, tokenizer: object, cache: Path) -> Encoded:
    """Every sample of the manifest in memory on the CPU (this bench compares methods on small sets)."""
    c, h, w = native_shape(manifest, manifest_uri, 0, cache, DataConfig())
    prep = ImagePreprocessing(height=h, width=w, num_channels=c)  # type: ignore[arg-type]
    with SampleStream(manifest, manifest_uri, prep, tokenizer, max_length=TINY_TEXT_LENGTH,
                      device=torch.device("cpu"), settings=DataConfig(workers=0), cache_dir=cache) as stream:
        return stream.view(np.arange(len(manifest))).all()


class World:
    """One seed's dataset, encoded once, on which :meth:`train_original` trains the original."""

    def __init__(self, args: argparse.Namespace, seed: int, workdir: Path) -> None:
        self.seed = seed
        self.device = resolve_device(args.device)
        self.precision = resolve_precision(args.precision, self.device)
        self.samples = synthetic.generate(
            synthetic.SynthParams(patients=args.patients, image_size=args.image_size, seed=seed)
        )
        manifest_uri = synthetic.write_dataset(self.samples, (workdir / f"data-{seed}").as_uri())
        self.manifest = read_manifest(manifest_uri)
        self.tokenizer = build_tokenizer(
            build_vocabulary(self.manifest.texts), workdir / f"tok-{seed}", max_length=TINY_TEXT_LENGTH
        )
        self.encoded = read_all(self.manifest, manifest_uri, self.tokenizer, workdir / f"cache-{seed}")
        images = self.encoded.pixels
        self.groups = np.unique(np.asarray(self.manifest.subject_ids), return_inverse=True)[1]
        self.config = model_config(
            args, int(self.manifest.labels.max()) + 1, int(images.shape[-1]), int(images.shape[1]), len(self.tokenizer)
        )
        train = np.asarray([i for i, s in enumerate(self.manifest.splits) if s == "train"])
        self.train = self.encoded.take(train)

    def epoch_seconds(self) -> float:
        """Seconds of one recipe epoch over the training samples: the second of two on a throwaway
        model (the first pays for warm-up)."""
        stamps: list[float] = []
        train_model(
            build_model(self.config, self.seed),
            self.train,
            RECIPE.model_copy(update={"epochs": 2}),
            generator=seed_everything(self.seed),
            device=self.device,
            precision=self.precision,
            on_epoch=lambda epoch, loss: stamps.append(time.perf_counter()),
        )
        return stamps[1] - stamps[0]

    def train_original(self, recipe: TrainConfig) -> None:
        self.original = build_model(self.config, self.seed)
        start = time.perf_counter()
        train_model(
            self.original,
            self.train,
            recipe,
            generator=seed_everything(self.seed),
            device=self.device,
            precision=self.precision,
        )
        self.original_seconds = time.perf_counter() - start

    def inputs(self, fraction: float, noise_level: float) -> UnlearnInputs:
        subjects = synthetic.choose_forget_subjects(self.samples, fraction, self.seed)
        sets = split(self.manifest, subjects)
        self.rows = (sets.forget, sets.retain, sets.test)
        forget, retain, test = (self.encoded.take(ix).to(self.device) for ix in self.rows)
        pool = data.noisy_text_pool(
            [self.manifest.texts[i] for i in sets.forget],
            noise_level,
            NOISY_TEXT_COPIES,
            self.seed,
            str(self.tokenizer.mask_token),
        )
        noisy = [tuple(t.to(self.device) for t in data.tokenize(self.tokenizer, p, TINY_TEXT_LENGTH)) for p in pool]
        return UnlearnInputs(forget, retain, test, noisy)  # type: ignore[arg-type]


def score(model: torch.nn.Module, inputs: UnlearnInputs, world: World, seconds: float) -> dict[str, float]:
    sets = (inputs.forget, inputs.retain, inputs.test)
    logits = [image_logits([model], d, precision=world.precision)[0] for d in sets]  # type: ignore[list-item]
    scored = [Scored(x, d.labels.cpu().numpy(), world.groups[rows])  # type: ignore[union-attr]
              for x, d, rows in zip(logits, sets, world.rows, strict=True)]
    metrics = model_metrics(*scored, seed=world.seed, bootstrap=0)
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


def method_config(name: str, recipe: TrainConfig, selection: str) -> MethodConfig:
    """The settings ``name`` runs with: retrain follows the (possibly shortened) recipe of the
    original (FORGET_MI.md §9); every other method gets the ``--selection`` rule."""
    if name == "retrain":
        return METHODS[name].model_copy(update={"epochs": recipe.epochs})
    return METHODS[name].model_copy(update={"selection": SelectionRule(rule=selection)})


def run_method(
    world: World, name: str, inputs: UnlearnInputs, recipe: TrainConfig, selection: str
) -> dict[str, float]:
    method = method_config(name, recipe, selection)
    ctx = MethodContext(
        original=copy.deepcopy(world.original),
        inputs=inputs,
        method=method,
        generator=seed_everything(world.seed),
        device=world.device,
        precision=world.precision,
        seed=world.seed,
    )
    try:
        result = get_method(method.name)(ctx)
    except DivergedError as err:
        log(f"  {name}: diverged ({err})")
        return {k: math.nan for k in (*METRICS, "epochs_run")}
    row = score(result.model, inputs, world, result.seconds)
    row["epochs_run"] = float(result.selection.epochs_run)
    return row


def add_derived(rows: dict[str, dict[str, float]]) -> None:
    """cost_ratio and avg_gap of every row against the retrain row of the same seed."""
    ref = rows["retrain"]
    for row in rows.values():
        row["cost_ratio"] = row["seconds"] / ref["seconds"]
        row["avg_gap"] = float(np.mean([abs(row[k] - ref[k]) for k in GAP_KEYS]))


def mean_rows(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    names = per_seed[0].keys()
    return {n: {k: float(np.nanmean([r[n][k] for r in per_seed])) for k in per_seed[0][n]} for n in names}


def choose_recipe(args: argparse.Namespace, world: World, elapsed: float) -> tuple[TrainConfig, dict[str, Any]]:
    """The recipe of the original and of retrain: ``RECIPE``, shortened by --epochs or --time-budget."""
    notes: dict[str, Any] = {}
    epochs = args.epochs if args.epochs is not None else RECIPE.epochs
    if args.time_budget is not None:
        start = time.perf_counter()
        seconds = world.epoch_seconds()
        remaining = args.time_budget - elapsed - (time.perf_counter() - start)
        fitting = budget_epochs(remaining, seconds, args.seeds, len(args.fraction_list), RECIPE.epochs)
        notes = {"calibration_epoch_seconds": seconds, "budget_remaining_seconds": remaining}
        log(f"calibration: {seconds:.2f}s per training epoch; {remaining:.0f}s of the budget left fit {fitting} epochs")
        epochs = min(epochs, fitting)
    if epochs != RECIPE.epochs:
        notes["recipe_epochs_reduced_from"] = RECIPE.epochs
        log(
            f"RECIPE SHORTENED: original and retrain train {epochs} epochs instead of {RECIPE.epochs} "
            "(recorded in results.json config.recipe)"
        )
    return RECIPE.model_copy(update={"epochs": epochs}), notes


def write_partial(out: Path | None, done: list[dict[str, Any]]) -> None:
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "partial.json").write_text(json.dumps(json_safe(done), indent=1))


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    per_fraction: dict[float, list[dict[str, dict[str, float]]]] = {f: [] for f in args.fraction_list}
    original_seconds = []
    done: list[dict[str, Any]] = []
    recipe, notes = RECIPE, {}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="forgetmi-bench-") as tmp:
        for seed in range(args.seeds):
            world = World(args, seed, Path(tmp))
            log(f"seed {seed}: {len(world.samples)} samples ({len(world.train)} training) ready after "
                f"{time.perf_counter() - t0:.1f}s on {world.device} ({world.precision})")
            if seed == 0:
                recipe, notes = choose_recipe(args, world, time.perf_counter() - t0)
            world.train_original(recipe)
            original_seconds.append(world.original_seconds)
            log(f"seed {seed}: original trained in {world.original_seconds:.1f}s")
            for fraction in args.fraction_list:
                inputs = world.inputs(fraction, DEMO_METHOD.noise.text_level)
                rows = {"original": score(world.original, inputs, world, world.original_seconds)}
                rows["original"]["epochs_run"] = float(recipe.epochs)
                for name in METHODS:
                    rows[name] = run_method(world, name, inputs, recipe, args.selection)
                    log(
                        f"  fraction {fraction:.2f} {name}: {rows[name]['seconds']:.2f}s, "
                        f"{rows[name]['epochs_run']:.0f} epochs"
                    )
                    done.append({"seed": seed, "fraction": fraction, "method": name, **rows[name]})
                    write_partial(args.out, done)
                add_derived(rows)
                per_fraction[fraction].append(rows)
    result: dict[str, Any] = {
        "config": {
            "patients": args.patients,
            "seeds": args.seeds,
            "fractions": args.fraction_list,
            "threads": args.threads,
            "selection": args.selection,
            "methods": {n: method_config(n, recipe, args.selection).model_dump(mode="json") for n in METHODS},
            "recipe": recipe.model_dump(mode="json"),
            **notes,
            "original_seconds": float(np.mean(original_seconds)),
            "wall_seconds": time.perf_counter() - t0,
            **environment(args, world),
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
