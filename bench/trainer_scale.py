"""Trainer at scale: one Forget-MI job's seconds and memory as the retain and test sets grow while
the forget set stays the same (a benchmark, not a test: it prints, it asserts nothing).

What runs:

- a moto S3 server in this process with one bucket; every child process reaches it through
  ``FORGETMI_S3_ENDPOINT_URL`` (and dummy AWS credentials: moto checks no signature);
- one generated dataset (``forgetmi_trainer.synthetic.generate``, default image size 64 px, 8-bit),
  written once by ``synthetic.write_dataset`` in a child process running the trainer code under
  test (``--format png``: PNG files; ``--format npz``: the ``.npz`` shards of the code before issue
  13, its only format). One forget set: training patients in a seeded order until about
  ``--forget-samples`` (80) samples. For each size S of ``--sizes`` (default 600, 2400, 9600) a
  manifest next to the dataset's own holds the forget patients plus other whole patients, in one
  seeded order (so each set holds the smaller ones), until it has S rows (forget + retain + test),
  with the dataset's train/test proportion. The images are shared by all manifests;
- per size, the original model: ``python -m forgetmi_trainer train`` for ``--train-epochs`` (3)
  epochs (timed, printed, not part of the figures); with ``--retrained`` also a model trained
  without the forget patients, named in the job as the retrained reference;
- per size, the job: ``python -m forgetmi_trainer run --config job.json`` as its own process,
  method ``forget-mi`` with the demo's recipe (``forgetmi_trainer.demo.DEMO_METHOD`` of the code
  under test) at a fixed ``--epochs`` (default 10, selection rule ``FixedEpoch``), device cpu,
  precision fp32, the audit's other settings at the code's defaults. The smallest size's job
  runs once before, not counted: the first job on a machine reads torch's lazily imported
  modules from a cold disk (5 s more of unlearning, once);
- one more job at the smallest size with 512 px images stored as 16-bit PNGs (``--no-large``
  leaves it out), with its own dataset and forget set chosen the same way. The small CNN at 512 px
  costs ≈ 60× more per sample than at 64 px, so this job runs ``--large-epochs`` (2) Forget-MI
  epochs on an original trained ``--large-train-epochs`` (1): it shows memory and decoding at that
  size, not the ratios. The code before issue 13 writes and reads only 8-bit ``.npz`` shards, so
  with ``--format npz`` this run uses 512 px 8-bit ``.npz`` shards instead, and says so.

Per job: the report's ``timings`` (load, unlearn, audit = ``eval_seconds``, total) and the
process's wall seconds; memory from the OS, sampled every 50 ms (less often when a sample takes
long, see :class:`TreeSampler`) over the job's process tree (the process and every descendant,
e.g. DataLoader workers):

- ``peak_rss_mb``: the tree's RSS with shared pages counted once: the ``Pss_Anon`` + ``Pss_Shmem``
  of ``/proc/<pid>/smaps_rollup`` summed over the tree, plus the job process's ``RssFile`` (its
  libraries). For one process this is its RSS;
- ``peak_pss_mb``: the plain PSS summed over the tree. Lower, and varying with what else runs:
  a library page that other processes on the machine map too is split with them;
- ``main_maxrss_mb``: the job process's ``ru_maxrss`` from ``wait4`` (exact, not sampled).

Then the ratios of each size to the smallest (unlearn + audit seconds, peak memory). Target of
issue 13 for the new code: at 16N against N, unlearn + audit seconds ≤ 1.5× and peak memory
≤ 1.3×. The machine's 1-minute load average before each job is printed with it: other work on
the machine slows the jobs.

Usage::

    PYTHONSAFEPATH=1 .venv/bin/python bench/trainer_scale.py [--sizes 600,2400,9600] [--json]
    # the code before a change (a checkout, its trainer/ dir, or a dir holding forgetmi_trainer/):
    git worktree add --detach /tmp/baseline <commit>
    PYTHONSAFEPATH=1 .venv/bin/python bench/trainer_scale.py --format npz --trainer-pythonpath /tmp/baseline

``--json`` prints one object: ``{"sizes": {"600": {"load_seconds": …, "unlearn_seconds": …,
"audit_seconds": …, "total_seconds": …, "peak_rss_mb": …, …}, …}, "large": …, "ratios": …}``.
"""

from __future__ import annotations

import argparse
import csv
import inspect
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

BUCKET = "bench"
REGISTRY = f"s3://{BUCKET}/registry"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
           "AWS_EC2_METADATA_DISABLED": "true"}
ENDPOINT_ENV = "FORGETMI_S3_ENDPOINT_URL"
MEAN_SAMPLES_PER_PATIENT = 5.5  # synthetic.SynthParams: 3 to 8 samples per patient
BIT_DEPTH_NAMES = ("bit_depth", "bits", "depth")  # how the new write_dataset / SynthParams may name it
MEMORY_NOTE = ("RSS of the process tree, shared pages once (anonymous + shared-memory PSS summed over the tree, "
               "plus the job process's file-backed RSS), sampled every >= 50 ms")
RUN_TIMEOUT_S = 3600.0


# ---------------------------------------------------------------- choosing the patients (pure)

def patient_rows(rows: Sequence[tuple[str, str]]) -> dict[str, tuple[str, int]]:
    """(subject_id, split) per sample -> {subject: (split, samples)} in first-seen order."""
    out: dict[str, tuple[str, int]] = {}
    for subject, split in rows:
        seen = out.get(subject)
        if seen is not None and seen[0] != split:
            raise ValueError(f"patient {subject} has samples in two splits")
        out[subject] = (split, (seen[1] if seen else 0) + 1)
    return out


def seeded_order(subjects: Sequence[str], seed: int) -> list[str]:
    """``subjects`` in an order fixed by ``seed`` (a sort by a keyed hash: no numpy needed)."""
    import hashlib

    return sorted(subjects, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())


def pick_forget(patients: Mapping[str, tuple[str, int]], target: int, seed: int) -> list[str]:
    """Training patients in a seeded order until their samples come closest to ``target``."""
    chosen: list[str] = []
    total = 0
    for subject in seeded_order([s for s, (split, _) in patients.items() if split == "train"], seed):
        n = patients[subject][1]
        if total >= target or (total and abs(total + n - target) > abs(total - target)):
            break
        chosen.append(subject)
        total += n
    return sorted(chosen)


def pick_patients(patients: Mapping[str, tuple[str, int]], forget: Sequence[str], rows: int,
                  seed: int) -> list[str]:
    """The forget patients, then other whole patients in a seeded order (train and test interleaved
    to keep the dataset's share of test rows) until ``rows`` rows; a smaller ``rows`` picks a prefix."""
    test_share = sum(n for split, n in patients.values() if split == "test") / sum(n for _, n in patients.values())
    others = seeded_order([s for s in patients if s not in set(forget)], seed + 1)
    queues = {split: [s for s in others if patients[s][0] == split] for split in ("train", "test")}
    chosen, taken, test_rows = list(forget), sum(patients[s][1] for s in forget), 0
    while taken < rows:
        split = "test" if test_rows < test_share * taken else "train"
        if not queues[split]:
            raise ValueError(f"the generated dataset has too few {split} patients for {rows} rows")
        subject = queues[split].pop(0)
        chosen.append(subject)
        taken += patients[subject][1]
        test_rows += patients[subject][1] if split == "test" else 0
    if all(patients[s][0] == "test" for s in chosen[len(forget):]):
        raise ValueError(f"{rows} rows leave no retain patient beside the forget patients; ask for more rows")
    return chosen


# ---------------------------------------------------------------- child: write the dataset

def write_kwargs(write: Any, params_type: Any, fmt: str, bit_depth: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments for ``write_dataset`` and ``SynthParams`` of the code under test."""
    accepts = inspect.signature(write).parameters
    fields = getattr(params_type, "model_fields", {})
    write_kw: dict[str, Any] = {}
    params_kw: dict[str, Any] = {}
    if "fmt" in accepts:
        write_kw["fmt"] = fmt
    elif fmt != "npz":
        raise SystemExit(f"This trainer's synthetic.write_dataset writes only .npz shards; use --format npz, "
                         f"not {fmt}.")
    if bit_depth != 8:
        name = next((n for n in BIT_DEPTH_NAMES if n in accepts), None)
        field = next((n for n in BIT_DEPTH_NAMES if n in fields), None)
        if name is None and field is None:
            raise SystemExit(f"This trainer's synthetic code takes no bit depth ({'/'.join(BIT_DEPTH_NAMES)}): "
                             f"it cannot write {bit_depth}-bit images.")
        (write_kw if name else params_kw)[name or str(field)] = bit_depth
    return write_kw, params_kw


def write_dataset_child(spec: Mapping[str, Any]) -> dict[str, Any]:
    """In a child running the code under test: generate, choose, write; what the parent needs back."""
    from forgetmi_trainer import storage, synthetic
    from forgetmi_trainer.demo import DEMO_METHOD

    write_kw, params_kw = write_kwargs(synthetic.write_dataset, synthetic.SynthParams, spec["format"],
                                       spec["bit_depth"])
    sizes = sorted(spec["sizes"])
    patients_n = math.ceil(sizes[-1] / MEAN_SAMPLES_PER_PATIENT * 1.25) + 40
    params = synthetic.SynthParams(patients=patients_n, image_size=spec["image_size"], seed=spec["seed"], **params_kw)
    started = time.perf_counter()
    samples = synthetic.generate(params)
    patients = patient_rows([(s.subject_id, s.split) for s in samples])
    forget = pick_forget(patients, spec["forget_samples"], spec["seed"])
    chosen = {size: pick_patients(patients, forget, size, spec["seed"]) for size in sizes}
    keep = set(chosen[sizes[-1]])
    manifest_uri = synthetic.write_dataset([s for s in samples if s.subject_id in keep], spec["out_uri"], **write_kw)
    if not manifest_uri.endswith(".csv"):
        raise SystemExit(f"The dataset's manifest {manifest_uri} is not CSV; this bench filters CSV rows.")
    header, *body = list(csv.reader(io.StringIO(storage.read_text(manifest_uri))))
    subject_col, split_col = header.index("subject_id"), header.index("split")
    manifests: dict[str, Any] = {}
    for size in sizes:
        members = set(chosen[size])
        rows = [row for row in body if row[subject_col] in members]
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerows([header, *rows])
        uri = storage.join(manifest_uri.rsplit("/", 1)[0], f"manifest-{size}.csv")
        storage.write_text(uri, text.getvalue())
        manifests[str(size)] = {"uri": uri, "rows": len(rows), "patients": len(members),
                                "test_rows": sum(row[split_col] == "test" for row in rows)}
    forget_n = sum(patients[s][1] for s in forget)
    method = DEMO_METHOD.model_copy(update={"epochs": spec["epochs"]}).model_dump(mode="json")
    method["selection"] = {"rule": "FixedEpoch"}
    return {"manifests": manifests, "forget_subjects": forget, "forget_samples": forget_n, "method": method,
            "generated_patients": patients_n, "write_seconds": round(time.perf_counter() - started, 1)}


# ---------------------------------------------------------------- memory of a process tree

def descendants(root: int) -> list[int]:
    """``root`` and every process below it (from each /proc/<pid>/stat's parent field)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += parents.get(pid, [])
    return found


def rollup_kb(pid: int) -> dict[str, int]:
    """The kB fields of ``/proc/<pid>/smaps_rollup`` (``Pss``, ``Pss_Anon``, ...); empty once it is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    fields = (line.split() for line in text.splitlines()[1:])
    return {f[0].rstrip(":"): int(f[1]) for f in fields if len(f) >= 2 and f[1].isdigit()}


def rss_file_kb(pid: int) -> int:
    """The process's file-backed resident memory (``RssFile`` of ``/proc/<pid>/status``), 0 once it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith("RssFile:")), 0)


def tree_memory_kb(root: int) -> tuple[int, int, int]:
    """(RSS of the tree, PSS summed over the tree, processes). The RSS counts every anonymous and
    shared-memory page of the tree once (their PSS summed over the tree: a page a DataLoader worker
    shares with its parent is split between them) plus the root's file-backed pages (libraries),
    so pages shared with processes outside the tree do not lower it, as they lower the plain PSS."""
    tree = descendants(root)
    rollups = [rollup_kb(pid) for pid in tree]
    own = sum(r.get("Pss_Anon", 0) + r.get("Pss_Shmem", 0) for r in rollups)
    return own + rss_file_kb(root), sum(r.get("Pss", 0) for r in rollups), len(tree)


class TreeSampler(threading.Thread):
    """Samples a process tree's memory (:func:`tree_memory_kb`) every ``interval`` seconds, or every
    ``4 ×`` the time a sample took when that is longer (the kernel walks every page table of the tree
    for ``smaps_rollup``: ≈ 10–50 ms per GB), so sampling costs the job at most a fifth of a core."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(daemon=True, name="memory-sampler")
        self.pid, self.interval = pid, interval
        self.peak_rss_kb, self.peak_pss_kb, self.most_processes, self.samples = 0, 0, 0, 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            started = time.perf_counter()
            rss, pss, processes = tree_memory_kb(self.pid)
            self.peak_rss_kb, self.peak_pss_kb = max(self.peak_rss_kb, rss), max(self.peak_pss_kb, pss)
            self.most_processes = max(self.most_processes, processes)
            self.samples += 1
            self.stopped.wait(max(self.interval, 4 * (time.perf_counter() - started)))


# ---------------------------------------------------------------- children

def trainer_path(given: Path | None, work: Path) -> str | None:
    """The PYTHONPATH entry that puts ``given``'s trainer first: a dir holding ``forgetmi_trainer/``
    as is, or a checkout (``<dir>/trainer``) or the package dir itself through a symlink in ``work``."""
    if given is None:
        return None
    given = given.resolve()
    if (given / "forgetmi_trainer" / "__init__.py").exists():
        return str(given)
    package = given / "trainer" if (given / "trainer" / "__init__.py").exists() else given
    if not (package / "__init__.py").exists() or not (package / "cli.py").exists():
        raise SystemExit(f"--trainer-pythonpath {given} holds no trainer package (forgetmi_trainer/ or trainer/).")
    shim = work / "trainer-path"
    shim.mkdir(exist_ok=True)
    (shim / "forgetmi_trainer").symlink_to(package, target_is_directory=True)
    return str(shim)


def child_env(endpoint: str, pythonpath: str | None, threads: int | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "FORGETMI_", "PYTHONPATH"))}
    env.update({**AWS_ENV, ENDPOINT_ENV: endpoint, "PYTHONSAFEPATH": "1", "HF_HUB_OFFLINE": "1",
                "FORGETMI_LOG_FORMAT": "text"})
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    if threads:
        env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    return env


def run_child(args: list[str], env: Mapping[str, str], work: Path, log_name: str,
              sample: bool = False) -> dict[str, Any]:
    """Run ``python <args>`` to its end in ``work``; its last stdout line, wall seconds, memory."""
    log_path = work / f"{log_name}.log"
    with open(log_path, "wb") as log, open(work / f"{log_name}.out", "wb") as out:
        started = time.perf_counter()
        proc = subprocess.Popen([sys.executable, *args], env=dict(env), cwd=work, stdout=out, stderr=log)
        sampler = TreeSampler(proc.pid)
        if sample:
            sampler.start()
        killer = threading.Timer(RUN_TIMEOUT_S, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
            sampler.stopped.set()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    if sample:
        sampler.join()
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-15:]
        raise RuntimeError(f"{' '.join(args[:3])} exited with {proc.returncode}:\n" + "\n".join(tail))
    lines = (work / f"{log_name}.out").read_text().strip().splitlines()
    return {"last_line": lines[-1] if lines else "", "wall_seconds": wall, "peak_rss_kb": sampler.peak_rss_kb,
            "peak_pss_kb": sampler.peak_pss_kb, "samples": sampler.samples,
            "processes": sampler.most_processes, "maxrss_kb": usage.ru_maxrss}


# ---------------------------------------------------------------- the bench

def start_s3() -> tuple[Any, Any, str]:
    """A moto S3 server on loopback with the bench's bucket: (server, boto3 client, endpoint)."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per S3 call
    os.environ.update(AWS_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    client.create_bucket(Bucket=BUCKET)
    return server, client, endpoint


def prepare_dataset(name: str, spec: Mapping[str, Any], env: Mapping[str, str], work: Path) -> dict[str, Any]:
    """Write one dataset and its per-size manifests with the code under test (a child process)."""
    spec_path = work / f"{name}-spec.json"
    spec_path.write_text(json.dumps({**spec, "out_uri": f"s3://{BUCKET}/{name}"}))
    done = run_child([str(Path(__file__).resolve()), "--write-dataset", str(spec_path)], env, work, f"write-{name}")
    dataset: dict[str, Any] = json.loads(done["last_line"])
    subjects = work / f"{name}-forget.txt"
    subjects.write_text("\n".join(dataset["forget_subjects"]) + "\n")
    dataset["subjects_file"] = str(subjects)
    return dataset


def train_model(manifest: str, model: str, version: str, epochs: int, env: Mapping[str, str], work: Path,
                exclude: str | None = None) -> float:
    """``forgetmi_trainer train`` into the registry; its seconds (as the trainer counts them)."""
    out = f"{REGISTRY}/{model}/versions/{version}"
    args = ["-m", "forgetmi_trainer", "train", "--manifest", manifest, "--out", out, "--epochs", str(epochs),
            "--seed", "0", "--device", "cpu"]
    done = run_child(args + (["--exclude-subjects", exclude] if exclude else []), env, work, f"train-{model}-{version}")
    return float(json.loads(done["last_line"])["seconds"])


def job_config(model: str, manifest: str, dataset: Mapping[str, Any], retrained: bool, work: Path,
               candidate: str = "v2") -> Path:
    ref = {"registry_uri": REGISTRY, "name": model}
    config = {"request": f"bench/{model}", "model": {**ref, "version": "v1"}, "manifest_uri": manifest,
              "forget": {"file": dataset["subjects_file"]}, "method": dataset["method"],
              "output_uri": f"{REGISTRY}/{model}/versions/{candidate}", "candidate_version": candidate, "seed": 0,
              "device": "cpu", "precision": "fp32", "termination_message_path": str(work / f"{model}.termination")}
    if retrained:
        config["retrained"] = {**ref, "version": "v1-retrained"}
    path = work / f"{model}-{candidate}-job.json"
    path.write_text(json.dumps(config, indent=1))
    return path


def measure(label: str, size: str, dataset: Mapping[str, Any], args: argparse.Namespace, env: Mapping[str, str],
            work: Path, s3: Any, train_epochs: int, warm_up: bool = False) -> dict[str, Any]:
    """Train the original (and the reference), run the job as its own process; its figures."""
    model = f"scale-{label}"
    manifest = dataset["manifests"][size]["uri"]
    train_s = train_model(manifest, model, "v1", train_epochs, env, work)
    if args.retrained:
        train_model(manifest, model, "v1-retrained", train_epochs, env, work, dataset["subjects_file"])
    config = job_config(model, manifest, dataset, args.retrained, work)
    note(f"{label}: original trained in {train_s:.1f} s; running the job")
    if warm_up:  # once, not counted: the first job reads torch's lazily imported modules from a cold disk
        warm = job_config(model, manifest, dataset, args.retrained, work, candidate="warm-up")
        run_child(["-m", "forgetmi_trainer", "run", "--config", str(warm)], env, work, f"warm-up-{model}")
    load_before = round(os.getloadavg()[0], 2)
    done = run_child(["-m", "forgetmi_trainer", "run", "--config", str(config)], env, work, f"run-{model}", sample=True)
    body = s3.get_object(Bucket=BUCKET, Key=f"registry/{model}/versions/v2/report.json")["Body"].read()
    report = json.loads(body)
    timings, counts = report["timings"], report["counts"]
    audit = timings.get("audit_seconds", timings.get("eval_seconds"))
    figures = {
        "rows": dataset["manifests"][size]["rows"], "test_rows": dataset["manifests"][size]["test_rows"],
        **{k: v for k, v in counts.items() if k.endswith("samples")},
        "epochs_run": report["selection"]["epochs_run"],
        "load_seconds": round(timings["load_seconds"], 2), "unlearn_seconds": round(timings["unlearn_seconds"], 2),
        "audit_seconds": round(audit, 2), "total_seconds": round(timings["total_seconds"], 2),
        "unlearn_audit_seconds": round(timings["unlearn_seconds"] + audit, 2),
        "wall_seconds": round(done["wall_seconds"], 2), "peak_rss_mb": round(done["peak_rss_kb"] / 1024, 1),
        "peak_pss_mb": round(done["peak_pss_kb"] / 1024, 1),
        "main_maxrss_mb": round(done["maxrss_kb"] / 1024, 1), "processes": done["processes"],
        "memory_samples": done["samples"],
        "train_seconds": round(train_s, 1), "load_average_before": load_before,
    }
    note(f"{label}: " + ", ".join(f"{k} {v}" for k, v in figures.items()))
    return figures


def ratios(sizes: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """Each size against the smallest: unlearn + audit seconds and peak memory."""
    first_key = min(sizes, key=int)
    first = sizes[first_key]
    out = {}
    for key, row in sizes.items():
        if key != first_key:
            out[f"{int(key) / int(first_key):g}N/N"] = {
                "unlearn_audit": round(row["unlearn_audit_seconds"] / first["unlearn_audit_seconds"], 2),
                "peak_rss": round(row["peak_rss_mb"] / first["peak_rss_mb"], 2),
                "main_maxrss": round(row["main_maxrss_mb"] / first["main_maxrss_mb"], 2)}
    return out


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def large_plan(args: argparse.Namespace) -> tuple[int, str]:
    """The bit depth of the large-image run and the sentence that says why."""
    px = args.large_image_size
    if args.format == "npz":
        return 8, (f"{px} px as 8-bit .npz shards: the code before issue 13 writes and reads only 8-bit arrays "
                   "(a uint16 array would be clipped to 0/1), so there is no 16-bit run with --format npz")
    return 16, f"{px} px as 16-bit {args.format.upper()} files"


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    server, s3, endpoint = start_s3()
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="forgetmi-scale-") as tmp:
            work = Path(tmp)
            env = child_env(endpoint, trainer_path(args.trainer_pythonpath, work), args.threads)
            spec = {"format": args.format, "bit_depth": 8, "image_size": args.image_size, "seed": args.seed,
                    "sizes": args.sizes, "forget_samples": args.forget_samples, "epochs": args.epochs}
            dataset = prepare_dataset("data", spec, env, work)
            note(f"dataset: {dataset['forget_samples']} forget samples of {len(dataset['forget_subjects'])} "
                 f"patients; written in {dataset['write_seconds']} s; manifests {dataset['manifests']}")
            sizes = {str(n): measure(str(n), str(n), dataset, args, env, work, s3, args.train_epochs, i == 0)
                     for i, n in enumerate(sorted(args.sizes))}
            large, why = None, None
            if not args.no_large:
                bits, why = large_plan(args)
                small = min(args.sizes)
                big_spec = {**spec, "image_size": args.large_image_size, "bit_depth": bits, "sizes": [small],
                            "epochs": args.large_epochs}
                big = prepare_dataset("data-large", big_spec, env, work)
                large = {"size": small, "image_size": args.large_image_size, "bit_depth": bits, "format": args.format,
                         "epochs": args.large_epochs, "train_epochs": args.large_train_epochs,
                         **measure(f"{small}-large", str(small), big, args, env, work, s3, args.large_train_epochs)}
    finally:
        server.stop()
    return {"sizes": sizes, "large": large, "large_note": why or "left out (--no-large)",
            "ratios": ratios(sizes), "memory": MEMORY_NOTE, "format": args.format,
            "trainer": str(args.trainer_pythonpath or "this checkout"), "image_size": args.image_size,
            "epochs": args.epochs, "train_epochs": args.train_epochs, "retrained": args.retrained,
            "threads": args.threads,
            "forget_samples": dataset["forget_samples"], "method": dataset["method"],
            "machine": machine(), "bench_seconds": round(time.perf_counter() - started, 1)}


def machine() -> dict[str, Any]:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor())
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


COLUMNS = (("rows", "rows"), ("forget_samples", "forget"), ("retain_samples", "retain"), ("test_samples", "test"),
           ("load_seconds", "load s"), ("unlearn_seconds", "unlearn s"), ("audit_seconds", "audit s"),
           ("unlearn_audit_seconds", "unlearn+audit s"), ("total_seconds", "total s"), ("wall_seconds", "wall s"),
           ("peak_rss_mb", "peak RSS MB"), ("peak_pss_mb", "peak PSS MB"), ("main_maxrss_mb", "maxrss MB"))


def format_result(result: Mapping[str, Any]) -> str:
    lines = [f"trainer: {result['trainer']}; format {result['format']}, {result['image_size']} px; forget-mi "
             f"{result['epochs']} epochs (FixedEpoch); original trained {result['train_epochs']} epochs; "
             f"{result['machine']['cores']} cores ({result['machine']['cpu']}), torch threads "
             f"{result['threads'] or 'default'}",
             f"peak RSS = {result['memory']}; peak PSS = PSS summed over the process tree; "
             "maxrss = ru_maxrss of the job process (wait4)", "",
             "| size | " + " | ".join(title for _, title in COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    rows = dict(result["sizes"])
    if result["large"]:
        rows[f"{result['large']['size']} at {result['large']['image_size']} px, {result['large']['bit_depth']}-bit"] = (
            result["large"])
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(str(row.get(key, "-")) for key, _ in COLUMNS) + " |")
    if result["large"]:
        big = result["large"]
        lines.append(f"\nlarge-image run: {result['large_note']}; Forget-MI {big['epochs']} epochs, original "
                     f"{big['train_epochs']} epoch(s)")
    else:
        lines.append(f"\nlarge-image run: {result['large_note']}")
    for label, r in result["ratios"].items():
        lines.append(f"{label}: unlearn+audit seconds {r['unlearn_audit']}x, peak RSS {r['peak_rss']}x, "
                     f"maxrss {r['main_maxrss']}x")
    lines.append(f"bench: {result['bench_seconds']} s")
    return "\n".join(lines)


def parse_sizes(text: str) -> list[int]:
    try:
        sizes = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"--sizes takes comma-separated row counts, not {text!r}") from None
    if not sizes or sizes[0] < 50:
        raise argparse.ArgumentTypeError(f"--sizes needs row counts of at least 50, not {text!r}")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=[600, 2400, 9600],
                        help="manifest rows (forget + retain + test) per run (default 600,2400,9600)")
    parser.add_argument("--format", choices=("png", "npz"), default="png", help="how images are stored")
    parser.add_argument("--trainer-pythonpath", type=Path, default=None,
                        help="run the children with this trainer (a checkout, its trainer/ or a dir with "
                             "forgetmi_trainer/)")
    parser.add_argument("--image-size", type=int, default=64, help="image side in px (default 64)")
    parser.add_argument("--epochs", type=int, default=10, help="Forget-MI epochs (default 10)")
    parser.add_argument("--train-epochs", type=int, default=3, help="epochs of the original model (default 3)")
    parser.add_argument("--forget-samples", type=int, default=80, help="about this many forget samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="OMP_NUM_THREADS of the children (default: torch's own choice, one per core)")
    parser.add_argument("--retrained", action="store_true", help="also train and audit a retrained reference")
    parser.add_argument("--no-large", action="store_true", help="leave out the 512 px run")
    parser.add_argument("--large-image-size", type=int, default=512, help="image side of that run (default 512)")
    parser.add_argument("--large-epochs", type=int, default=2,
                        help="Forget-MI epochs of the 512 px run (default 2: the small CNN at 512 px is slow on a CPU)")
    parser.add_argument("--large-train-epochs", type=int, default=1, help="epochs of its original (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--write-dataset", type=Path, help=argparse.SUPPRESS)  # the dataset child
    args = parser.parse_args(argv)
    if args.write_dataset:
        print(json.dumps(write_dataset_child(json.loads(args.write_dataset.read_text()))))
        return 0
    result = run_bench(args)
    print(json.dumps(result) if args.json else format_result(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
