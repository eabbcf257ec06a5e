"""Measuring: a session (settings every rank inherits, a stamps folder, Ray running for the warm cases)
and repeats taken round-robin over the cases, so a busy spell of a shared machine hits every case alike."""

import contextlib
import json
import logging
import os
import shutil
import signal
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import raympi

from benchmarks import procinfo
from benchmarks.bodies import SETTINGS_ENV

ROOT = Path(__file__).resolve().parents[1]
# The points of one launch, in order (see phases()); each phase ends at the point of its name.
PHASES = ("worker forked", "ranks started", "rank 0 ready", "peers ready", "body", "teardown")
MPIRUN_NAMES = ("prterun", "mpirun")
# How long a run's ranks and mpirun may take to exit after the call returned.
EXIT_GRACE_S = 3.0


@dataclass(frozen=True)
class Case:
    """One way of running one body on a number of ranks; `run()` does it once and returns when it is over."""

    method: str
    ranks: int
    body: str
    run: Callable[[], Any] = field(compare=False, hash=False)

    @property
    def key(self) -> str:
        return f"{self.method}/{self.ranks}/{self.body}"


@dataclass
class Sample:
    wall: float
    phases: dict[str, float]  # empty when the world was not started by mpirun
    result: Any  # what rank 0's body stamped
    prestarted: bool = False  # the world's processes were started before the call (Ray had started it earlier)
    left_running: int = 0  # ranks and mpirun of this run still alive when the next run began (then killed)
    costs: dict = field(default_factory=dict)  # what the run cost the cluster's nodes (benchmarks.nodecost)
    since_previous: float | None = None  # seconds from the end of the session's previous run to this run's start


def phases(start: float, end: float, stamps: list[dict]) -> dict[str, float]:
    """Split one launch at points seen from outside the product: the call's start and end, when the
    ranks' parent (mpirun, or the process Ray forked that became mpirun) and the ranks started (/proc),
    and when each rank entered and left the body."""
    if not stamps or any(s["parent"] not in MPIRUN_NAMES for s in stamps):
        return {}
    rank0 = next(s for s in stamps if s["rank"] == 0)
    peers = [s for s in stamps if s["rank"] != 0] or [rank0]
    points = [start, rank0["parent_started"], max(s["started"] for s in stamps), rank0["enter"],
              max(s["enter"] for s in peers), rank0["exit"], end]
    for i in range(1, len(points)):  # /proc's 10 ms ticks may put a point a little before the previous
        points[i] = max(points[i], points[i - 1])
    return {name: points[i + 1] - points[i] for i, name in enumerate(PHASES)}


class Session:
    """Everything measured in one run of the harness, kept per case."""

    def __init__(self, settings: dict, ray_cpus: int):
        self._stamps = Path(tempfile.mkdtemp(prefix="raympi-bench-"))
        os.environ[SETTINGS_ENV] = json.dumps({**settings, "stamps": str(self._stamps)})
        # Ranks started by mpirun, by Ray or by a subprocess import the bodies from here.
        os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self._ray_cpus = ray_cpus
        self._start_ray()
        _remove_dead_mpiruns_session_dirs()
        self.samples: dict[str, list[Sample]] = {}
        self._previous: tuple[Sample, list] | None = None  # the last run, and its (pid, start time)s
        self._ended: float | None = None  # when the last run's call returned (time.time())

    def measure(self, cases: list[Case], repeats: int, warmup: int = 1) -> None:
        """Run each case not measured yet `warmup` times untimed, then `repeats` times, round-robin."""
        new = [case for case in dict.fromkeys(cases) if case.key not in self.samples]
        for _ in range(warmup):
            for case in new:
                self._once(case)
        for _ in range(repeats):
            for case in new:
                self.samples.setdefault(case.key, []).append(self._once(case))

    def measure_repeated(self, cases: list[Case], rounds: int, warmup: int = 1, gap_s: float = 0.0) -> None:
        """Round-robin as measure(), but each turn of a case is a call repeated in this process: `warmup` untimed
        calls, then a timed one `gap_s` after the previous ended (its processes' exit, awaited first, counts in it)."""
        new = [case for case in dict.fromkeys(cases) if case.key not in self.samples]
        for _ in range(rounds):
            for case in new:
                for _ in range(warmup):
                    self._once(case)
                self.samples.setdefault(case.key, []).append(self._once(case, gap_s))

    @contextlib.contextmanager
    def product_ray(self, start: Callable[[], Any]):
        """In place of the session's Ray, the one RayMPIJob starts itself when none runs (its embedded Ray, where it
        keeps warm worlds): `start()`, a RayMPIJob call, starts it; the session's Ray is back afterwards."""
        self._reap()
        ray.shutdown()
        try:
            start()
            yield
        finally:
            self._reap()
            ray.shutdown()
            self._start_ray()

    def median(self, key: str, figure: Callable[[Sample], float | None] = lambda s: s.wall) -> float | None:
        values = [v for v in map(figure, self.samples.get(key, [])) if v is not None]
        return statistics.median(values) if values else None

    def median_phases(self, key: str) -> list[float | None]:
        """The median of each of PHASES over the samples of `key` (each on its own: they need not add up)."""
        return [self.median(key, lambda s, p=phase: s.phases.get(p)) for phase in PHASES]

    def close(self) -> None:
        self._reap()
        ray.shutdown()
        shutil.rmtree(self._stamps, ignore_errors=True)

    def _start_ray(self) -> None:
        raympi.init_ray(num_cpus=self._ray_cpus, include_dashboard=False, logging_level=logging.WARNING)

    def _once(self, case: Case, gap_s: float = 0.0) -> Sample:
        for stale in self._stamps.iterdir():
            stale.unlink()
        self._reap()
        time.sleep(max(0.0, (self._ended or 0.0) + gap_s - time.time()))
        start = time.time()
        case.run()
        end = time.time()
        stamps = [json.loads(p.read_text()) for p in self._stamps.iterdir()]
        rank0 = next((s["result"] for s in stamps if s["rank"] == 0), None)
        # /proc counts in ticks of 10 ms
        prestarted = any(s["parent"] in MPIRUN_NAMES and s["parent_started"] < start - 0.02 for s in stamps)
        sample = Sample(end - start, phases(start, end, stamps), rank0, prestarted,
                        since_previous=None if self._ended is None else start - self._ended)
        self._ended = end
        ranks = [(s["pid"], s["started"]) for s in stamps]
        mpiruns = {(s["parent_pid"], s["parent_started"]) for s in stamps if s["parent"] in MPIRUN_NAMES}
        self._previous = sample, ranks + sorted(mpiruns)
        return sample

    def _reap(self) -> None:
        """Give the previous run's processes EXIT_GRACE_S to end, then kill what is left and count it on that
        run's sample: left alone, such processes would pile up and take the cores from later runs."""
        if self._previous is None:
            return
        sample, processes = self._previous
        self._previous = None
        deadline = time.monotonic() + EXIT_GRACE_S
        while any(procinfo.alive(*p) for p in processes) and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid, started in processes:  # ranks before their mpirun
            if procinfo.alive(pid, started):
                sample.left_running += 1
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _remove_dead_mpiruns_session_dirs()


def _remove_dead_mpiruns_session_dirs() -> None:
    """A killed mpirun leaves <tmpdir>/ompi.<pid>; plain mpirun, given that pid later, would stop at once
    (RayMPIJob's launch removes its own: see raympi.command)."""
    for session_dir in Path(tempfile.gettempdir()).glob("ompi.*"):
        pid = session_dir.name.partition(".")[2]
        if pid.isdigit() and not Path("/proc", pid).exists():
            shutil.rmtree(session_dir, ignore_errors=True)
