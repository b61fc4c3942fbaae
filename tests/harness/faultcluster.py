"""One fault scenario's cluster: the emulated API server (optionally behind :class:`~harness.apifaults.ApiFaultProxy`),
a namespace, the Job runner (warm trainers, :mod:`harness.warmtrainer`), and the real operator as a
subprocess (:class:`~harness.operatorproc.OperatorProcess`), with the fitted world's registry in moto S3
(optionally behind ``harness.s3faults.S3FaultProxy`` for the operator and its Jobs).

Coalescing is off (``FORGETMI_COALESCE_WINDOW_SECONDS=0``): each request runs its own Job. Requests
are those of :func:`harness.requests.apply_request` with a 1-epoch run (:data:`FAST_METHOD`).
:meth:`FaultCluster.figures` checks every invariant of :mod:`harness.invariants`::

    with FaultCluster(tmp_path, world, server) as cluster:
        cluster.seed("m-a")
        cluster.operator.start()
        cluster.apply("a", "m-a")
        cluster.wait_ended(["a"], 120)
        assert not cluster.figures(["a"], ["m-a"]).problems()
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from harness import invariants
from harness.apifaults import ApiFaultProxy
from harness.cluster import (
    EVENTS,
    REQUESTS,
    install_crd,
    join_cluster,
    write_kubeconfig,
)
from harness.emulator import ApiServer
from harness.jobrunner import JobRunner
from harness.operatorproc import OperatorProcess
from harness.requests import apply_request
from harness.warmtrainer import ForkServer, WarmJobRunner
from harness.world import seed_model

FAST_METHOD = {"epochs": 1, "batchSize": 16}
"""The trainer's shortest real run on the small world (the fault suite is about what happens around it)."""
RunnerFactory = Callable[[ApiServer, Path], JobRunner]


class Fleet:
    """One emulated API server and one Job runner for several fault clusters (a namespace
    and an operator each) that run at once: kmock patches aiohttp's resolver per server, so servers must
    start and stop in turn, and a Job runner runs every Job of its server, whatever the namespace."""

    def __init__(self, tmp: Path, server: ForkServer, runner: RunnerFactory | None = None) -> None:
        self.api = ApiServer()
        self.api.start()
        install_crd(self.api)
        self.jobs_dir = tmp / "jobs"
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self.runner = (runner(self.api, self.jobs_dir) if runner is not None
                       else WarmJobRunner(self.api, self.jobs_dir, server=server))

    def __enter__(self) -> Fleet:
        self.runner.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        try:
            self.runner.__exit__(None, None, None)
        finally:
            self.api.stop()


class FaultCluster:
    """See the module docstring. ``fleet``: the emulator and Job runner to share (else its own, made from
    ``runner``, e.g. one that writes a malformed report); ``env``: more operator variables;
    ``api_proxy``: put the API fault proxy (no faults until its ``fraction`` is set or an outage is
    started) between the operator and the emulator; ``s3_endpoint``: the S3 endpoint of the operator and
    its Jobs (an S3 fault proxy)."""

    def __init__(self, tmp: Path, world: Mapping[str, Any], server: ForkServer, *, fleet: Fleet | None = None,
                 env: Mapping[str, str] | None = None, api_proxy: bool = False, api_seed: int = 0,
                 s3_endpoint: str | None = None, runner: RunnerFactory | None = None) -> None:
        self.tmp, self.world, self.server = tmp, world, server
        self._own_fleet = fleet is None
        self.fleet = fleet if fleet is not None else Fleet(tmp, server, runner)
        self.api, self.runner, self.jobs_dir = self.fleet.api, self.fleet.runner, self.fleet.jobs_dir
        self.env: dict[str, str] = {}
        self.namespace = join_cluster(self.api, tmp, self.env.__setitem__)
        self.env["FORGETMI_COALESCE_WINDOW_SECONDS"] = "0"
        if s3_endpoint is not None:
            self.env["FORGETMI_S3_ENDPOINT_URL"] = s3_endpoint
        self.env.update(env or {})
        self.proxy: ApiFaultProxy | None = None
        if api_proxy:
            self.proxy = ApiFaultProxy(self.api.api_url, seed=api_seed).__enter__()
            write_kubeconfig(Path(self.env["KUBECONFIG"]), self.proxy.url)
        self.operator = OperatorProcess(self.namespace, self.env, tmp / "operator.log")
        self.applied: dict[str, tuple[str, list[str]]] = {}
        """Request name → (model, its forget list)."""

    # ---- lifetime ----------------------------------------------------------------------------

    def __enter__(self) -> FaultCluster:
        if self._own_fleet:
            self.fleet.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        try:
            self.operator.stop()
        finally:
            if self.proxy is not None:
                self.proxy.__exit__(None, None, None)
            if self._own_fleet:
                self.fleet.__exit__(None, None, None)

    def job_names(self) -> set[str]:
        """The Jobs (and TrainJobs) ever created in this cluster's namespace."""
        return set(invariants.job_creations(self.api, self.namespace))

    # ---- requests ----------------------------------------------------------------------------

    def seed(self, model: str) -> None:
        """Model ``model``: a copy of the world's v1, alias ``production`` → v1."""
        seed_model(dict(self.world), model)

    def apply(self, name: str, model: str, subjects: Sequence[str] | None = None, **spec: Any) -> None:
        """The forget-list Secret and request ``name`` on ``model`` (a 1-epoch run unless ``spec`` says)."""
        chosen = list(self.world["subjects"] if subjects is None else subjects)
        self.applied[name] = (model, chosen)
        apply_request(self.api, self.namespace, dict(self.world), model, name, chosen,
                      **{"method": FAST_METHOD, **spec})

    def request(self, name: str) -> dict[str, Any]:
        found = self.api.get(REQUESTS, self.namespace, name)
        assert found is not None, f"request {name} does not exist"
        return found

    def status(self, name: str) -> dict[str, Any]:
        return dict(self.request(name).get("status") or {})

    def events(self, name: str, reason: str | None = None) -> list[dict[str, Any]]:
        """The Events about request ``name`` (with exactly ``reason``, when given)."""
        return [e for e in self.api.list(EVENTS, self.namespace)
                if (e.get("involvedObject") or {}).get("name") == name and reason in (None, e.get("reason"))]

    def wait(self, predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
        """``predicate()`` once true; AssertionError after ``timeout`` seconds, with the operator's log tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = predicate()
            if result:
                return result
            time.sleep(interval)
        raise AssertionError(f"Timed out after {timeout:g} s waiting for {what}. The operator "
                             f"({'running' if self.operator.alive else 'not running'}) logged last:\n"
                             f"{self.operator.log_tail(15)}")

    def wait_ended(self, names: Iterable[str], timeout: float) -> dict[str, dict[str, Any]]:
        """Every request of ``names`` once all are in a terminal phase; AssertionError naming the others."""
        names = list(names)

        def ended() -> dict[str, dict[str, Any]] | None:
            found = {name: self.request(name) for name in names}
            return found if all(invariants.phase_of(obj) in invariants.TERMINAL for obj in found.values()) else None

        try:
            return dict(self.wait(ended, timeout, f"{len(names)} request(s) to end"))
        except AssertionError as err:
            open_ = {n: invariants.phase_of(self.request(n)) for n in names
                     if invariants.phase_of(self.request(n)) not in invariants.TERMINAL}
            raise AssertionError(f"{err}\nStill open: {json.dumps(open_)}") from None

    # ---- the invariants ----------------------------------------------------------------------

    def figures(self, names: Iterable[str] | None = None, *, scenario: str = "",
                expected: Mapping[str, Sequence[str]] | None = None, exempt: Sequence[str] = ("Failed",),
                privacy: bool = True) -> invariants.Figures:
        """Every invariant of :mod:`harness.invariants` for the requests ``names`` (default: all applied)
        and their models; the operator should still run (its metrics are swept too)."""
        names = list(self.applied if names is None else names)
        models = sorted({self.applied[name][0] for name in names if name in self.applied})
        registry = str(self.world["registry"])
        figures = invariants.Figures(scenario=scenario, requests=len(names))
        objs = invariants.requests(self.api, self.namespace, names)
        figures.phases.update(invariants.phase_of(obj) or "none" for obj in objs.values())
        figures.jobs_created = sum(invariants.job_creations(self.api, self.namespace).values())
        ours = self.job_names()
        started = [name for name in self.runner.started if name in ours]
        figures.duplicate_jobs = invariants.duplicate_jobs(self.api, self.namespace, started)
        figures.lost = invariants.lost_requests(self.api, self.namespace, names, expected)
        figures.broken_aliases = [p for model in models for p in invariants.alias_problems(registry, model)]
        figures.missing_receipts = invariants.receipt_problems(self.api, self.namespace, names, exempt=exempt)
        figures.other = [f"Job runner: {err!r}" for err in self.runner.errors if any(n in str(err) for n in ours)]
        if privacy:
            metrics = ""
            if self.operator.alive:
                try:
                    self.operator.wait_serving(15)
                    metrics = self.operator.metrics()
                except (AssertionError, OSError) as err:
                    figures.other.append(f"the operator's metrics could not be read: {err}")
            texts = invariants.visible_texts(self.api, self.namespace, registry=registry, models=models,
                                             workdir=self.jobs_dir, jobs=ours, operator_log=self.operator.log_text(),
                                             metrics=metrics)
            forgotten = {s for name in names if name in self.applied for s in self.applied[name][1]}
            figures.leaks = invariants.leaks(texts, forgotten)
        return figures
