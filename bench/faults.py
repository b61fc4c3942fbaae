"""Fault injection at scale (a benchmark, not a test): the long version of tests/faults/.

What runs, all in this process but the operators and the trainers: a moto S3 server holding the small
world of the tests (``tests/harness/world.py``: 30 patients, a trained v1), the emulated API server
(``tests/harness/emulator.py``), the real operator as a subprocess per cluster
(``tests/harness/operatorproc.py``, logging at DEBUG) and real trainer runs (``tests/harness/warmtrainer.py``:
forked from one process that imported the trainer, 1 epoch each); moto's conditional writes are made
atomic, as S3's are (``tests/harness/motolocks.py``). Each trial is a cluster of its own (a
namespace, an operator, models of its own). The scenarios (``--scenarios``, all by default):

- ``kill``: SIGKILL at each named failpoint (``FORGETMI_FAILPOINTS``), ``--trials`` times each, then a
  restart; ``mid-run`` and ``random`` kills (``--random-kills`` trials at seeded times);
- ``double-kill``: killed at one point, then at the next one of the lifecycle after the restart;
- ``s3``: ``--requests`` requests on as many models with each of ``--rates`` of S3 requests faulted
  (``tests/harness/s3faults.py``: 500, 503, forwarded-then-500, dropped);
- ``api``: the same with Kubernetes API calls faulted (429 with Retry-After, 500) and a 10 s watch outage;
- ``outage``: a watch outage of ``--outage-seconds`` (every watch cut, new ones refused with 503), once
  with the operator alone and once started again 10 s after it ends, as a Deployment's kubelet would;
- ``concurrent``: ``--concurrent`` requests for one model at once, coalescing off, the default rebase
  limit (3); ``chain``: ``--chain`` requests with a limit high enough for all (n(n+1)/2 trainer runs).

Every trial is checked with ``tests/harness/invariants.py`` (no duplicate Job, no lost request, the alias
always names a complete version with its digest, receipts, no patient ID outside the requests' Secrets);
a trial with any problem is a failure, and its problems are printed. Printed at the end: one row per
scenario with trials, failures, duplicate Jobs, lost requests, broken aliases, other problems and seconds.

Usage::

    PYTHONSAFEPATH=1 .venv/bin/python bench/faults.py --chain 10            # a moderate size (≈ 25 min)
    PYTHONSAFEPATH=1 .venv/bin/python bench/faults.py --scenarios kill,double-kill --trials 3 --parallel 6
    PYTHONSAFEPATH=1 .venv/bin/python bench/faults.py --scenarios concurrent,chain --concurrent 50 --chain 50
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import random
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from harness.faultcluster import FaultCluster, Fleet  # noqa: E402
from harness.invariants import AliasMonitor, Figures  # noqa: E402
from harness.killscenarios import KillResult, KillScenario, run_kill_scenario  # noqa: E402
from harness.motolocks import atomic_conditional_writes  # noqa: E402
from harness.races import chain_problems, held_problems, run_race  # noqa: E402
from harness.s3faults import S3FaultProxy  # noqa: E402
from harness.warmtrainer import ForkServer  # noqa: E402
from harness.world import fitted_world  # noqa: E402

from forgetmi_operator.api import failpoints  # noqa: E402

SCENARIOS = ("kill", "double-kill", "s3", "api", "outage", "concurrent", "chain")
S3_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
          "AWS_REGION": "us-east-1", "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
          "AWS_EC2_METADATA_DISABLED": "true"}


@dataclass
class Bench:
    world: dict[str, Any]
    server: ForkServer
    s3: str
    tmp: Path
    args: argparse.Namespace
    trials: Iterator[int] = field(default_factory=itertools.count)

    def folder(self, name: str) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"{name.replace(' ', '-')}-", dir=self.tmp))


Trial = tuple[str, Figures]
"""(scenario row, the trial's figures)."""


def _kill_figures(result: KillResult, *, need_reached: bool) -> Figures:
    figures = result.figures
    if result.error:
        figures.other.append(result.error.splitlines()[0])
    if result.phase != "Promoted":
        figures.other.append(f"ended {result.phase}")
    if need_reached and not all(result.reached):
        figures.other.append(f"the failpoints were reached {result.reached}")
    return figures


def kills(bench: Bench, double: bool) -> Iterator[Trial]:
    args, scenarios = bench.args, []
    if double:
        scenarios = [(f"double kill {a} → {b}", KillScenario(f"{a}-{b}-{t}", points=(a, b)), False)
                     for a, b in zip(failpoints.POINTS, failpoints.POINTS[1:], strict=False)
                     for t in range(args.trials)]
    else:
        delays = random.Random(args.seed)
        scenarios = [(f"kill at {p}", KillScenario(f"{p}-{t}", points=(p,)), True)
                     for p in failpoints.POINTS for t in range(args.trials)]
        scenarios += [("kill at after-alias-write, alias moved on", KillScenario(f"moved-{t}", points=(
            "after-alias-write",), move_alias_on=True), True) for t in range(args.trials)]
        scenarios += [("kill mid-run", KillScenario(f"mid-{t}", mode="mid-run"), False) for t in range(args.trials)]
        scenarios += [("kill at a random time", KillScenario(f"random-{t}", mode="random", delay=round(
            delays.uniform(0.5, 10.0), 2)), False) for t in range(args.random_kills)]
    with Fleet(bench.folder("fleet"), bench.server) as fleet, ThreadPoolExecutor(args.parallel) as pool:
        def one(item: tuple[str, KillScenario, bool]) -> Trial:
            row, scenario, need = item
            result = run_kill_scenario(bench.folder(scenario.name), bench.world, bench.server, scenario, fleet=fleet)
            if double:
                print(f"  {row}: the failpoints were reached {result.reached}", file=sys.stderr)
            return row, _kill_figures(result, need_reached=need)
        yield from pool.map(one, scenarios)


class Supervisor(threading.Thread):
    """Starts the operator again RESTART_SECONDS after it ended by itself, as the kubelet restarts a
    Deployment's container; ``restarts`` counts them."""

    RESTART_SECONDS = 10.0

    def __init__(self, cluster: FaultCluster) -> None:
        super().__init__(daemon=True, name="operator-supervisor")
        self.cluster, self.restarts, self.stopping = cluster, 0, threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(1.0):
            if not self.cluster.operator.alive and not self.stopping.wait(self.RESTART_SECONDS):
                self.cluster.operator.start()
                self.restarts += 1


def many(bench: Bench, row: str, *, s3_rate: float = 0.0, api_rate: float = 0.0, outage: float = 0.0,
         supervised: bool = False) -> Trial:
    """``--requests`` requests on as many models through S3 faults, API faults and a watch outage; with
    ``supervised``, an operator that ends is started again (:class:`Supervisor`)."""
    started, count = time.monotonic(), bench.args.requests
    tag = next(bench.trials)
    names, models = [f"r-{i}" for i in range(count)], [f"m-many-{tag}-{i}" for i in range(count)]
    with S3FaultProxy(bench.s3, fraction=0.0, seed=bench.args.seed) as s3, \
            FaultCluster(bench.folder(row), bench.world, bench.server, s3_endpoint=s3.url, api_proxy=True,
                         api_seed=bench.args.seed) as cluster, \
            AliasMonitor(str(bench.world["registry"]), models) as monitor:
        proxy = cluster.proxy
        assert proxy is not None
        for model in models:
            cluster.seed(model)
        s3.fraction, proxy.fraction = s3_rate, api_rate
        cluster.operator.start()
        supervisor = Supervisor(cluster)
        if supervised:
            supervisor.start()
        for name, model in zip(names, models, strict=True):
            cluster.apply(name, model)
        if outage:
            cluster.wait(lambda: cluster.job_names(), 120, "a first Job")
            proxy.outage(outage)
        try:
            cluster.wait_ended(names, bench.args.timeout + outage)
        except AssertionError as err:
            print(f"  {row}: {str(err).splitlines()[0]}", file=sys.stderr)
        s3.fraction = proxy.fraction = 0.0
        supervisor.stopping.set()
        if supervised:
            supervisor.join()
            print(f"  {row}: the operator was started again {supervisor.restarts} time(s)", file=sys.stderr)
        figures = cluster.figures(scenario=row)
        if not cluster.operator.alive:
            figures.other.append("the operator ended")
        for name in names:
            status = cluster.status(name)
            if status.get("phase") not in ("Promoted", None):
                why = next((c for c in status.get("conditions") or [] if c.get("status") == "False"), {})
                figures.other.append(f"{name} ended {status.get('phase')} ({why.get('reason')}: {why.get('message')})")
        if not cluster.operator.alive:
            cluster.operator.kill()  # reaps it: its exit code joins exit_codes
            codes = cluster.operator.exit_codes
            errors = [line for line in cluster.operator.log_text().splitlines() if "[ERROR" in line or "[CRIT" in line]
            print(f"  {row}: the operator ended (exit codes {codes}); its last errors:\n    " +
                  "\n    ".join(line[:300] for line in errors[-5:]), file=sys.stderr)
        print(f"  {row}: S3 faults {dict(s3.faults)}, API {dict(proxy.counts)}", file=sys.stderr)
    figures.broken_aliases += monitor.problems
    figures.seconds = time.monotonic() - started
    return row, figures


def race(bench: Bench, row: str, count: int, max_rebases: int | None) -> Trial:
    started = time.monotonic()
    spec = {} if max_rebases is None else {"rollout": {"mode": "Automatic", "maxRebases": max_rebases}}
    result = run_race(bench.folder(row), bench.world, bench.server, f"m-race-{count}-{max_rebases or 'default'}", count,
                      end_timeout=bench.args.timeout * count, **spec)
    figures = result.figures
    figures.broken_aliases += result.alias_problems
    figures.other += held_problems(result.ended, 3) if max_rebases is None else chain_problems(result.ended,
                                                                                             result.record)
    promoted = sum(obj["status"]["phase"] == "Promoted" for obj in result.ended.values())
    print(f"  {row}: {promoted} promoted, {figures.jobs_created} Jobs", file=sys.stderr)
    figures.seconds = time.monotonic() - started
    return row, figures


def table(trials: list[Trial]) -> str:
    rows: dict[str, list[Figures]] = {}
    for row, figures in trials:
        rows.setdefault(row, []).append(figures)
    lines = ["| scenario | trials | failures | duplicate Jobs | lost requests | broken aliases | other problems "
             "| seconds |", "|---|---|---|---|---|---|---|---|"]
    for row, found in rows.items():
        lines.append(f"| {row} | {len(found)} | {sum(bool(f.problems()) for f in found)} | "
                     f"{sum(len(f.duplicate_jobs) for f in found)} | {sum(len(f.lost) for f in found)} | "
                     f"{sum(len(f.broken_aliases) for f in found)} | "
                     f"{sum(len(f.missing_receipts) + len(f.leaks) + len(f.other) for f in found)} | "
                     f"{sum(f.seconds for f in found):.0f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of {SCENARIOS}")
    parser.add_argument("--trials", type=int, default=1, help="trials of each kill and double kill")
    parser.add_argument("--random-kills", type=int, default=3, help="kills at random times")
    parser.add_argument("--rates", default="20,30,50", help="S3 and API fault rates, percent")
    parser.add_argument("--requests", type=int, default=5, help="requests (on as many models) per S3/API trial")
    parser.add_argument("--outage-seconds", type=float, default=120.0)
    parser.add_argument("--concurrent", type=int, default=50, help="requests at once, default rebase limit")
    parser.add_argument("--chain", type=int, default=50, help="requests at once, maxRebases high enough for all")
    parser.add_argument("--parallel", type=int, default=6, help="kill trials run at once")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds a trial's requests have to end")
    parser.add_argument("--seed", type=int, default=20261202)
    args = parser.parse_args(argv)
    unknown = set(args.scenarios.split(",")) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}; choose from {SCENARIOS}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from moto.server import ThreadedMotoServer

    os.environ.update(S3_ENV)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    moto.start()
    host, port = moto.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ["FORGETMI_S3_ENDPOINT_URL"] = endpoint
    chosen, rates = args.scenarios.split(","), [int(r) for r in args.rates.split(",")]
    started, trials = time.monotonic(), []
    try:
        with tempfile.TemporaryDirectory(prefix="forgetmi-faults-") as tmp, atomic_conditional_writes(), \
                fitted_world(endpoint, "faults") as world, ForkServer() as server:
            bench = Bench(world, server, endpoint, Path(tmp), args)
            plan: list[Callable[[], Iterator[Trial] | list[Trial]]] = []
            if "kill" in chosen:
                plan.append(lambda: kills(bench, double=False))
            if "double-kill" in chosen:
                plan.append(lambda: kills(bench, double=True))
            for rate in rates if "s3" in chosen else []:
                plan.append(lambda rate=rate: [many(bench, f"S3 faults {rate} %", s3_rate=rate / 100)])
            for rate in rates if "api" in chosen else []:
                plan.append(lambda rate=rate: [many(bench, f"API faults {rate} % + 10 s watch outage",
                                                    api_rate=rate / 100, outage=10.0)])
            if "outage" in chosen:
                plan.append(lambda: [many(bench, f"watch outage {args.outage_seconds:g} s",
                                          outage=args.outage_seconds)])
                plan.append(lambda: [many(bench, f"watch outage {args.outage_seconds:g} s, operator restarted "
                                          "when it ends", outage=args.outage_seconds, supervised=True)])
            if "concurrent" in chosen:
                plan.append(lambda: [race(bench, f"{args.concurrent} at once, maxRebases 3", args.concurrent, None)])
            if "chain" in chosen:
                plan.append(lambda: [race(bench, f"{args.chain} at once, maxRebases {args.chain}", args.chain,
                                          args.chain)])
            for step in plan:
                for row, figures in step():
                    trials.append((row, figures))
                    for problem in figures.problems():
                        print(f"  {row} ({figures.scenario}): {problem}", file=sys.stderr)
    finally:
        moto.stop()
    print(table(trials))
    print(f"\n{len(trials)} trials in {time.monotonic() - started:.0f} s; "
          f"{sum(bool(f.problems()) for _, f in trials)} failed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
