"""Forget-MI against retraining and the standard baselines: quality and cost side by side.

On the generated dataset (trainer/synthetic.py) this trains the original once per seed, then for
every forget fraction runs each method through the trainer's registry (``methods.get_method``),
timed in the same process on the same machine, and scores every model with the trainer's own
metrics (``evaluate.model_metrics``: macro AUC/F1 of the image head, the paper's MIA score, the
two-sided loss-attack AUC, the label-free logit-norm AUC and, with ``--lira``, offline LiRA).

Each seed's never-trained patients are split by patient, stratified by class, into V and T as a
Job deals them (``splits.deal``, seeded by the bench's seed, so a rerun splits alike): the selection
rule, the SVC attacker and ``--tune`` read V only; every reported figure is measured on T.

* ``retrain`` trains from scratch on the retain set with the original's recipe (``TrainConfig()``).
* ``forget-mi`` runs ``demo.DEMO_METHOD``, the recipe measured on this dataset.
* The baselines run the settings in :data:`BASELINES`, fixed before the first run (not tuned).
* ``--tune`` (bench/tune.py) replaces those fixed settings: every method but ``retrain`` gets the
  same budget of 8 configurations (2 learning rates × 4 strengths), chosen on validation seeds
  100.. by the avg gap to the retrained model measured on V only; the chosen settings then run on
  the held-out seeds 0..N-1 (at least 5: ``--tune --quick`` runs 5), reported as mean ± SE.
* ``--selection`` (every method but ``retrain`` alike): ``ForgetReachesTest`` (the default) stops a
  method after the first epoch whose mean forget-set loss reaches the mean loss of V (its
  planned epochs are the cap), the selection rule FORGET_MI.md §9 counts into the cost floor;
  ``FixedEpoch`` runs every planned epoch.
* ``--lira`` (on by default with ``--tune``, off without): K = 4 reference models per reported seed,
  trained with the original's recipe on random halves of the training patients (each patient IN
  exactly 2), give offline LiRA; they cost 4 trainings of the original per seed (the log and
  ``config.lira.reference_seconds`` say how long).

Per fraction it prints, averaged over seeds: forget AUC, forget F1, test AUC, test F1, MIA (the
paper's SVC score), attack AUC (two-sided) and its signed value, logit-norm AUC, LiRA AUC and TPR at
5 % FPR, seconds, epochs run, sample-passes (samples through the image encoder, forward and
forward+backward alike; bench_audit.PassCounter), cost ratio (seconds ÷ retrain seconds of the same
seed) and avg gap (mean |x − x_retrained| over forget AUC, forget F1, test AUC and MIA, against the
same seed's retrained model). ``--json`` prints one JSON object on stdout instead of the tables
(each method's row holds ``se``, the standard error over seeds, beside its means; with ``--tune``,
``tuned`` holds each method's chosen settings and every configuration tried); ``--out DIR`` writes
``results.json`` and ``gap_vs_cost.png`` there (and ``partial.json`` after every method, so a run
cut short still leaves its finished rows). ``--quick`` = 150 patients, fraction 0.10, 3 seeds (5
with ``--tune``; 2026-12-02 on 2 idle AMD EPYC cores: ``--quick --lira`` 118 s, ``--tune --quick``
395 s, of which 191 s tuning and 83 s LiRA references). Results and conclusions: bench/RESULTS.md.

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
(see ``bench_scales.budget_epochs``; not with ``--tune``). Any shortening is printed and recorded
in ``results.json`` (``config.recipe`` and ``config.recipe_epochs_reduced_from``).
bench/gpu_paper_run.sh is the prepared one-command GPU run; bench/RESULTS.md holds its time estimate.

    PYTHONSAFEPATH=1 .venv/bin/python bench/unlearn_vs_retrain.py --quick --out /tmp/bench
    PYTHONSAFEPATH=1 .venv/bin/python bench/unlearn_vs_retrain.py --tune --quick --json --out /tmp/tune
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from forgetmi_trainer import data, lira, splits, synthetic
from forgetmi_trainer.contract import DataConfig, MethodConfig, SelectionRule
from forgetmi_trainer.data import Encoded
from forgetmi_trainer.demo import DEMO_METHOD
from forgetmi_trainer.encoders import TINY_TEXT_LENGTH
from forgetmi_trainer.errors import DivergedError
from forgetmi_trainer.evaluate import Scored, model_metrics
from forgetmi_trainer.inference import image_logits
from forgetmi_trainer.job import NOISY_TEXT_COPIES
from forgetmi_trainer.manifest import Manifest, read_manifest
from forgetmi_trainer.methods import MethodContext, UnlearnInputs, get_method
from forgetmi_trainer.model import build_model
from forgetmi_trainer.preprocess import ImagePreprocessing
from forgetmi_trainer.runtime import resolve_device, resolve_precision, seed_everything
from forgetmi_trainer.streaming import SampleStream, native_shape
from forgetmi_trainer.tokenizer import build_tokenizer, build_vocabulary
from forgetmi_trainer.train import TrainConfig, train_model

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the bench's own modules (run with -P)
import tune
from bench_audit import PassCounter, lira_inputs, train_references
from bench_output import METRICS, format_tables, json_safe, mean_rows, plot
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
QUICK_TUNE_SEEDS = 5  # held-out seeds of --tune --quick
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
        f"{QUICK['seeds']} seeds ({QUICK_TUNE_SEEDS} with --tune) (overrides the three options above)",
    )
    p.add_argument(
        "--tune",
        action="store_true",
        help="tune every method but retrain on validation seeds 100.. (8 configurations each, chosen by the "
        "avg gap to retraining measured on V), then report the held-out seeds 0..N-1 as mean ± SE",
    )
    p.add_argument("--tune-seeds", type=int, default=2, help="validation seeds of --tune (100..100+N-1)")
    p.add_argument(
        "--lira",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="train 4 reference models per reported seed for offline LiRA (costs 4 trainings of the original "
        "per seed; default: on with --tune, off without)",
    )
    add_run_arguments(p)
    return checked_args(p, p.parse_args(argv))


def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """How the run goes: device, precision, recipe length, selection rule, output, threads."""
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
        "retrain alike) so that the estimate fits; never lengthens it (not with --tune)",
    )
    p.add_argument(
        "--selection",
        choices=("ForgetReachesTest", "FixedEpoch"),
        default="ForgetReachesTest",
        help="checkpoint rule of every method but retrain: stop once the forget-set loss reaches the loss of "
        "the validation patients V (default), or run every planned epoch",
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


def checked_args(p: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.Namespace:
    for key, value in SCALES[args.scale].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.quick:
        args.patients, args.fractions = QUICK["patients"], QUICK["fractions"]
        args.seeds = QUICK_TUNE_SEEDS if args.tune else QUICK["seeds"]
    if args.lira is None:
        args.lira = args.tune
    if args.epochs is not None and args.epochs < 1:
        p.error("--epochs must be at least 1")
    if args.seeds < 1:
        p.error("--seeds must be at least 1")
    if args.tune and args.time_budget is not None:
        p.error("--time-budget cannot be combined with --tune; use --epochs to shorten the recipe")
    if args.tune_seeds < 1:
        p.error("--tune-seeds must be at least 1")
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


@dataclass(frozen=True)
class Rows:
    """Manifest rows of one fraction's sets: forget, retain, V (validation patients), T (test patients)."""

    forget: np.ndarray
    retain: np.ndarray
    validation: np.ndarray
    test: np.ndarray


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
        # V/T as a Job deals them (splits.deal: by patient, stratified by class), seeded by the bench's seed: a
        # Job seeds it with the manifest's sha256, which here holds the temporary directory's random name.
        nonmember = np.flatnonzero(np.asarray(self.manifest.splits) != "train")
        in_v = splits.deal(np.asarray(self.manifest.subject_ids)[nonmember], self.manifest.labels[nonmember],
                           f"bench-seed-{seed}")
        self.validation_rows, self.test_rows = nonmember[in_v], nonmember[~in_v]
        self.references: lira.ReferenceStats | None = None
        self.reference_seconds = math.nan

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

    def train_references(self, recipe: TrainConfig) -> None:
        self.references, self.reference_seconds = train_references(self, recipe)

    def inputs(self, fraction: float, noise_level: float) -> UnlearnInputs:
        subjects = synthetic.choose_forget_subjects(self.samples, fraction, self.seed)
        sets = splits.resolve(self.manifest, subjects)  # D_f and D_r as a Job resolves them
        self.rows = Rows(sets.forget, sets.retain, self.validation_rows, self.test_rows)
        forget, retain, validation, test = (
            self.encoded.take(ix).to(self.device)
            for ix in (self.rows.forget, self.rows.retain, self.rows.validation, self.rows.test)
        )
        pool = data.noisy_text_pool(
            [self.manifest.texts[i] for i in sets.forget],
            noise_level,
            NOISY_TEXT_COPIES,
            self.seed,
            str(self.tokenizer.mask_token),
        )
        noisy = [tuple(t.to(self.device) for t in data.tokenize(self.tokenizer, p, TINY_TEXT_LENGTH)) for p in pool]
        return UnlearnInputs(forget, retain, test, noisy, validation=validation)  # type: ignore[arg-type]


def score(
    model: torch.nn.Module, inputs: UnlearnInputs, world: World, seconds: float, *, tuning: bool
) -> dict[str, float]:
    """One model's figures. Reported (``tuning`` False): the attacks compare D_f with T and the SVC trains on
    retain vs V. Tuning: V stands in for T as well, so nothing but V is read."""
    assert inputs.validation is not None
    sets = (inputs.forget, inputs.retain, inputs.validation, inputs.test)
    rows = (world.rows.forget, world.rows.retain, world.rows.validation, world.rows.test)
    logits = [image_logits([model], d, precision=world.precision)[0] for d in sets]  # type: ignore[list-item]
    f, r, v, t = (Scored(x, d.labels.cpu().numpy(), world.groups[ix])  # type: ignore[union-attr]
                  for x, d, ix in zip(logits, sets, rows, strict=True))
    references = None
    if world.references is not None and not tuning:
        references = lira_inputs(world.references, world.rows.forget, world.rows.test)
    metrics = model_metrics(f, r, v if tuning else t, validation=v, seed=world.seed, bootstrap=0, lira=references)
    s, m = metrics.split, metrics.mia
    values = {
        "forget_auc": s.forget_auc,
        "forget_f1": s.forget_f1,
        "test_auc": s.test_auc,
        "test_f1": s.test_f1,
        "mia": m.score,
        "attack_auc": m.attack_auc,
        "attack_auc_signed": m.attack_auc_signed,
        "tpr5": m.tpr_at_5pct_fpr,
        "logit_norm_auc": m.logit_norm_auc,
        "lira_auc": m.lira_auc,
        "lira_tpr5": m.lira_tpr_at_5pct_fpr,
        "patient_lira_auc": m.patient_lira_auc,
        "seconds": seconds,
    }
    return {k: math.nan if v is None else float(v) for k, v in values.items()}


def method_config(name: str, recipe: TrainConfig, selection: str) -> MethodConfig:
    """The settings ``name`` runs with untuned: retrain follows the (possibly shortened) recipe of the
    original (FORGET_MI.md §9); every other method gets the ``--selection`` rule."""
    if name == "retrain":
        return METHODS[name].model_copy(update={"epochs": recipe.epochs})
    return METHODS[name].model_copy(update={"selection": SelectionRule(rule=selection)})


def run_method(world: World, method: MethodConfig, inputs: UnlearnInputs, *, tuning: bool) -> dict[str, float]:
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
        with PassCounter() as counter:
            result = get_method(method.name)(ctx)
    except DivergedError as err:
        log(f"  {method.name}: diverged ({err})")
        return {k: math.nan for k in (*METRICS, "epochs_run", "sample_passes", "sample_passes_grad")}
    row = score(result.model, inputs, world, result.seconds, tuning=tuning)
    row["epochs_run"] = float(result.selection.epochs_run)
    row["sample_passes"], row["sample_passes_grad"] = float(counter.passes), float(counter.passes_grad)
    if result.embedding_scale is not None:  # Forget-MI: its relative push bound in absolute terms
        row["embedding_median_distance"] = result.embedding_scale.median_distance
        row["push_bound_absolute"] = _or_nan(result.embedding_scale.push_bound)
    return row


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else float(value)


def add_derived(rows: dict[str, dict[str, float]]) -> None:
    """cost_ratio, pass_ratio and avg_gap of every row against the retrain row of the same seed."""
    ref = rows["retrain"]
    for row in rows.values():
        row["cost_ratio"] = row["seconds"] / ref["seconds"]
        row["pass_ratio"] = row.get("sample_passes", math.nan) / ref["sample_passes"]
        row["avg_gap"] = float(np.mean([abs(row[k] - ref[k]) for k in GAP_KEYS]))


def seed_rows(
    world: World, fraction: float, methods: dict[str, MethodConfig], recipe: TrainConfig, *, tuning: bool,
    done: list[dict[str, Any]], out: Path | None,
) -> dict[str, dict[str, float]]:
    """Every method of ``methods`` (keyed by row name; one must be ``retrain``) on one seed and fraction."""
    inputs = world.inputs(fraction, DEMO_METHOD.noise.text_level)
    patients = {k: len(np.unique(world.groups[getattr(world.rows, k)])) for k in ("validation", "test")}
    log(f"seed {world.seed} fraction {fraction:.2f}: forget {len(world.rows.forget)}, retain {len(world.rows.retain)}, "
        f"V {len(world.rows.validation)} ({patients['validation']} patients), T {len(world.rows.test)} "
        f"({patients['test']} patients)")
    rows = {"original": score(world.original, inputs, world, world.original_seconds, tuning=tuning)}
    rows["original"]["epochs_run"] = float(recipe.epochs)
    for name, method in methods.items():
        rows[name] = run_method(world, method, inputs, tuning=tuning)
        log(f"  seed {world.seed} fraction {fraction:.2f} {name}: {rows[name]['seconds']:.2f}s, "
            f"{rows[name]['epochs_run']:.0f} epochs, {rows[name]['sample_passes']:.0f} sample-passes")
        done.append({"seed": world.seed, "fraction": fraction, "method": name, "tuning": tuning, **rows[name]})
        write_partial(out, done)
    add_derived(rows)
    return rows


def choose_recipe(
    args: argparse.Namespace, world: World | None, elapsed: float
) -> tuple[TrainConfig, dict[str, Any]]:
    """The recipe of the original and of retrain: ``RECIPE``, shortened by --epochs or --time-budget (which
    times ``world``'s training; it is never combined with --tune, which passes no world)."""
    notes: dict[str, Any] = {}
    epochs = args.epochs if args.epochs is not None else RECIPE.epochs
    if args.time_budget is not None and world is not None:
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


def new_world(args: argparse.Namespace, seed: int, tmp: Path, t0: float) -> World:
    world = World(args, seed, tmp)
    log(f"seed {seed}: {len(world.samples)} samples ({len(world.train)} training) ready after "
        f"{time.perf_counter() - t0:.1f}s on {world.device} ({world.precision})")
    return world


def tune_phase(
    args: argparse.Namespace, recipe: TrainConfig, tmp: Path, t0: float, done: list[dict[str, Any]]
) -> tuple[dict[float, dict[str, MethodConfig]], dict[float, dict[str, Any]], dict[str, Any]]:
    """Run every configuration of every tuned method on the validation seeds (scored on V only) and pick
    one per method and fraction (:func:`tune.select`). Returns the chosen settings, the ``tuned`` records
    and the tuning's own summary."""
    seeds = tune.validation_seeds(args.tune_seeds)
    grids = {n: tune.grid(n, method_config(n, recipe, args.selection)) for n in tune.TUNED_METHODS}
    runs = {f"{n}#{i}": c.method for n, g in grids.items() for i, c in enumerate(g)}
    runs["retrain"] = method_config("retrain", recipe, args.selection)
    per_seed: dict[float, list[dict[str, dict[str, float]]]] = {f: [] for f in args.fraction_list}
    start = time.perf_counter()
    for seed in seeds:
        world = new_world(args, seed, tmp, t0)
        world.train_original(recipe)
        for fraction in args.fraction_list:
            per_seed[fraction].append(seed_rows(world, fraction, runs, recipe, tuning=True, done=done, out=args.out))
    chosen: dict[float, dict[str, MethodConfig]] = {}
    records: dict[float, dict[str, Any]] = {}
    for fraction, seeds_rows in per_seed.items():
        chosen[fraction], records[fraction] = {}, {}
        for name, candidates in grids.items():
            keys = [f"{name}#{i}" for i in range(len(candidates))]
            gaps = [[rows[k]["avg_gap"] for rows in seeds_rows] for k in keys]
            passes = [rows[k]["sample_passes"] for rows in seeds_rows for k in keys]
            chosen[fraction][name] = tune.chosen(candidates, gaps)
            records[fraction][name] = tune.tuned_record(candidates, gaps, passes)
            log(f"tuned {name} at {fraction:.2f}: {records[fraction][name]['label']} "
                f"(validation avg gap {records[fraction][name]['validation_avg_gap']})")
        chosen[fraction]["retrain"] = runs["retrain"]
    summary = {"validation_seeds": seeds, "configurations_per_method": tune.GRID_SIZE,
               "rule": "lowest mean avg gap to the retrained model, measured on V, over the validation seeds",
               "grid": {n: [c.label for c in g] for n, g in grids.items()}, "seconds": time.perf_counter() - start}
    return chosen, records, summary


@dataclass
class Measured:
    """What the reported seeds gave: per fraction, each seed's rows; the seconds of the originals and of
    the reference models; the last seed's world (for the record of the machine and model)."""

    per_fraction: dict[float, list[dict[str, dict[str, float]]]]
    original_seconds: list[float]
    reference_seconds: list[float]
    world: World


def report_phase(
    args: argparse.Namespace, recipe: TrainConfig, chosen: dict[float, dict[str, MethodConfig]], tmp: Path,
    t0: float, done: list[dict[str, Any]], first: World | None,
) -> Measured:
    """The reported seeds 0..N-1: original, references (``--lira``) and every chosen method, scored on T."""
    measured = Measured({f: [] for f in args.fraction_list}, [], [], first)  # type: ignore[arg-type]
    for seed in range(args.seeds):
        world = first if seed == 0 and first is not None else new_world(args, seed, tmp, t0)
        world.train_original(recipe)
        measured.original_seconds.append(world.original_seconds)
        log(f"seed {seed}: original trained in {world.original_seconds:.1f}s")
        if args.lira:
            world.train_references(recipe)
            measured.reference_seconds.append(world.reference_seconds)
            log(f"seed {seed}: 4 LiRA reference models trained in {world.reference_seconds:.1f}s")
        for fraction in args.fraction_list:
            rows = seed_rows(world, fraction, chosen[fraction], recipe, tuning=False, done=done, out=args.out)
            measured.per_fraction[fraction].append(rows)
        measured.world = world
    return measured


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    done: list[dict[str, Any]] = []
    records: dict[float, dict[str, Any]] = {}
    tuning: dict[str, Any] | None = None
    first: World | None = None
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="forgetmi-bench-") as tmp:
        if args.tune:
            recipe, notes = choose_recipe(args, None, 0.0)
            if args.seeds < 5:
                log(f"NOTE: --tune reports {args.seeds} held-out seed(s); the benchmark's figures use at least 5")
            chosen, records, tuning = tune_phase(args, recipe, Path(tmp), t0, done)
        else:
            first = new_world(args, 0, Path(tmp), t0)
            recipe, notes = choose_recipe(args, first, time.perf_counter() - t0)
            chosen = {f: {n: method_config(n, recipe, args.selection) for n in METHODS} for f in args.fraction_list}
        measured = report_phase(args, recipe, chosen, Path(tmp), t0, done, first)
    config = {
        "patients": args.patients, "seeds": args.seeds, "fractions": args.fraction_list, "threads": args.threads,
        "selection": args.selection, "recipe": recipe.model_dump(mode="json"), **notes,
        "methods": {n: m.model_dump(mode="json") for n, m in chosen[args.fraction_list[0]].items()},
        "tune": tuning,
        "lira": {"k": 4, "reference_seconds": float(np.mean(measured.reference_seconds))} if args.lira else None,
        "sample_passes": "samples through the image encoder while the method ran (forward and forward+backward "
        "alike; sample_passes_grad: those with a backward)",
        "original_seconds": float(np.mean(measured.original_seconds)),
        "wall_seconds": time.perf_counter() - t0,
        **environment(args, measured.world),
    }
    result: dict[str, Any] = {"config": config, "fractions": {}}
    for fraction, per_seed in measured.per_fraction.items():
        rows = mean_rows(per_seed)
        block = {"retrain_seconds": rows["retrain"]["seconds"], "methods": {n: rows[n] for n in chosen[fraction]},
                 "original": rows["original"]}
        if args.tune:
            block["tuned"] = records[fraction]
        result["fractions"][f"{fraction:.2f}"] = block
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
