"""Data-parallel scaling of the unlearning loop: samples/s of one Forget-MI job with 1 and with N
processes on this machine (a benchmark, not a test: it prints, it asserts nothing).

What runs, all in ``--workdir`` on ``file://`` storage:

- one generated dataset (``forgetmi_trainer.synthetic``: ``--patients`` patients, ``--image-size`` px,
  the ``.npz`` shards) and its original model (``python -m forgetmi_trainer train``, ``--train-epochs``);
  one forget set (``--fraction`` of the training patients, seeded);
- per process count P of ``--processes`` (default ``1,2``), ``--repeats`` times in turn (1, 2, 1, 2, …):
  the job ``python -m forgetmi_trainer run`` (P = 1) or ``python -m forgetmi_trainer launch --standalone
  --nnodes 1 --nproc-per-node P -- run`` (P > 1; torchrun, gloo on the CPU, NCCL with ``--device cuda``),
  method ``forget-mi`` with the demo's recipe at a fixed ``--epochs`` (``FixedEpoch``) and the same global
  batch ``--batch-size`` (each rank takes batch / P), precision fp32 on the CPU (bf16 on CUDA unless
  ``--precision``). The first job runs once before, not counted (cold imports).

Figures per job, from the report rank 0 writes: ``unlearn_seconds`` (the method's loop: every rank
runs the same number of steps, so rank 0's time is the run's) and the unlearning throughput
``samples/s`` = forget samples × epochs run / unlearn seconds (each step also takes a retain batch of
the same size, which is not counted); then per P the median over repeats and the ratio to P = 1 (the
speed-up; ideal = P). torchrun gives each rank ``OMP_NUM_THREADS=1``; a single process uses torch's
default threads (one per core), so on the CPU the default comparison is P processes × 1 thread against
1 process × all cores: what a user gets by adding ``--processes``. ``--threads T`` sets
``OMP_NUM_THREADS=T`` for every job instead (``--threads 1``: 1 × 1 against P × 1, the parallel
efficiency of the data-parallel code itself, with as many cores busy as ranks).

Usage::

    PYTHONSAFEPATH=1 .venv/bin/python bench/distributed_scale.py [--processes 1,2] [--repeats 3] [--json]
    # on a GPU machine (one process per GPU):
    PYTHONSAFEPATH=1 .venv/bin/python bench/distributed_scale.py --device cuda --processes 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ENV = {**os.environ, "PYTHONSAFEPATH": "1"}


def _trainer(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "forgetmi_trainer", *args], env=ENV, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise SystemExit(f"forgetmi_trainer {' '.join(args[:2])} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc


def prepare(workdir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The dataset, the original model and the forget list (written once per workdir)."""
    from forgetmi_trainer import synthetic

    data, registry = workdir / "data", workdir / "registry"
    samples = synthetic.generate(synthetic.SynthParams(patients=args.patients, seed=0, image_size=args.image_size))
    manifest = synthetic.write_dataset(samples, data.as_uri())
    forget = synthetic.choose_forget_subjects(samples, args.fraction, seed=0)
    (workdir / "forget.txt").write_text("\n".join(forget))
    started = time.perf_counter()
    _trainer("train", "--manifest", manifest, "--out", f"{registry.as_uri()}/m/versions/v1", "--epochs",
             str(args.train_epochs), "--device", args.device)
    return {"manifest": manifest, "registry": registry.as_uri(), "samples": len(samples),
            "train_seconds": time.perf_counter() - started}


def job(workdir: Path, prepared: dict[str, Any], args: argparse.Namespace, processes: int, tag: str) -> dict[str, Any]:
    from forgetmi_trainer.contract import ForgetSubjects, JobConfig, ModelRef, Report, SelectionRule
    from forgetmi_trainer.demo import DEMO_METHOD

    method = DEMO_METHOD.model_copy(update={"epochs": args.epochs, "batch_size": args.batch_size,
                                            "selection": SelectionRule(rule="FixedEpoch")})
    config = JobConfig(model=ModelRef(registry_uri=prepared["registry"], name="m", version="v1"),
                       manifest_uri=prepared["manifest"], forget=ForgetSubjects(file=str(workdir / "forget.txt")),
                       method=method, output_uri=f"{prepared['registry']}/m/versions/{tag}", candidate_version=tag,
                       device=args.device, precision=args.precision)
    path = workdir / f"{tag}.json"
    path.write_text(config.model_dump_json())
    run = ["run", "--config", str(path), "--termination-log", os.devnull]
    if processes > 1:
        run = ["launch", "--standalone", "--nnodes", "1", "--nproc-per-node", str(processes), "--", *run]
    load = os.getloadavg()[0]
    started = time.perf_counter()
    _trainer(*run)
    wall = time.perf_counter() - started
    report = Report.model_validate_json(Path(config.resolved_report_uri.removeprefix("file://")).read_text())
    seconds = report.timings.unlearn_seconds
    return {"processes": processes, "world_size": report.environment.world_size,
            "forget_samples": report.counts.forget_samples, "epochs_run": report.selection.epochs_run,
            "unlearn_seconds": seconds, "wall_seconds": wall, "load_before": load,
            "samples_per_second": report.counts.forget_samples * report.selection.epochs_run / seconds,
            "device": report.environment.device, "precision": report.environment.precision}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    by = {}
    for p in sorted({r["processes"] for r in runs}):
        rates = [r["samples_per_second"] for r in runs if r["processes"] == p]
        by[p] = {"median_samples_per_second": statistics.median(rates), "runs": rates}
    base = by[min(by)]["median_samples_per_second"]
    for row in by.values():
        row["speedup"] = row["median_samples_per_second"] / base
    return by


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="Process counts, comma-separated (default 1,2).")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--fraction", type=float, default=0.2, help="Share of training patients forgotten.")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16, help="The global batch (a multiple of every P).")
    parser.add_argument("--train-epochs", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS of every job (default: unset).")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    counts = [int(p) for p in args.processes.split(",")]
    if args.threads is not None:
        ENV["OMP_NUM_THREADS"] = str(args.threads)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="forgetmi-ddp-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    prepared = prepare(workdir, args)
    job(workdir, prepared, args, counts[0], "warmup")
    runs = [job(workdir, prepared, args, p, f"r{i}p{p}") for i in range(args.repeats) for p in counts]
    out = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
           "settings": {k: v for k, v in vars(args).items() if k not in ("json", "workdir")},
           "samples": prepared["samples"], "runs": runs, "summary": summarise(runs)}
    if args.json:
        print(json.dumps(out, indent=2))
        return
    threads = "torch's default threads" if args.threads is None else f"{args.threads} thread(s) per process"
    print(f"{prepared['samples']} samples, {runs[0]['forget_samples']} to forget, {args.epochs} epochs, global batch "
          f"{args.batch_size}, {runs[0]['device']}/{runs[0]['precision']}, {os.cpu_count()} CPUs, {threads}")
    print(f"{'processes':>9} {'samples/s (median)':>19} {'speed-up':>9}  runs (samples/s)")
    for p, row in out["summary"].items():
        print(f"{p:>9} {row['median_samples_per_second']:>19.1f} {row['speedup']:>9.2f}  "
              + ", ".join(f"{r:.1f}" for r in row["runs"]))


if __name__ == "__main__":
    main()
