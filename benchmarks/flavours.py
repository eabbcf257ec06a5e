"""Section: each MPI flavour against its own plain launcher (mpirun, mpiexec), in the same run, 2 ranks: the launch
of a minimal job (allreduce of one int) and the allreduce bandwidth of a 16 MiB buffer.

The flavours' venvs are the ones `make test` builds (.venv-mpich, .venv-impi; a missing one is built first by
`make bench`). RayMPIJob runs on the session's Ray, its ranks in the flavour's venv through Ray's `py_executable`,
as on a cluster whose Ray runs in another environment than the ranks."""

import sys
from functools import cache

from flytekit import task
from flytekitplugins.raympi import RayMPIJob, RunPolicy

from benchmarks import bodies, launchers
from benchmarks.harness import ROOT, Case, Session
from benchmarks.report import Section, Target, seconds

RANKS = 2
MIB = 16
TARGET_RATIO = 0.95
# RayMPIJob's launch overhead over the flavour's plain launcher may exceed Open MPI's by this much.
OVERHEAD_MARGIN_S = 0.5
PYTHONS = {"openmpi": sys.executable, "mpich": str(ROOT / ".venv-mpich" / "bin" / "python"),
           "impi": str(ROOT / ".venv-impi" / "bin" / "python")}


def plain(flavour: str, body: str) -> Case:
    """The flavour's own launcher; Open MPI's without the libfabric BTL, as its ranks run under RayMPIJob."""
    if flavour == "openmpi":
        return launchers.mpirun_btl(RANKS, body)
    return launchers.mpirun(RANKS, body, flavour, PYTHONS[flavour])


@cache
def raympijob(flavour: str, body: str) -> Case:
    runtime_env = None if flavour == "openmpi" else {"py_executable": PYTHONS[flavour]}
    config = RayMPIJob(slots=RANKS, flavour=flavour, runtime_env=runtime_env,
                       run_policy=RunPolicy(active_deadline_seconds=600))
    return Case(f"raympijob:{flavour}", RANKS, body, task(task_config=config)(getattr(bodies, body)))


def run(session: Session, options) -> Section:
    mib = MIB if MIB in options.sizes_mib else max(options.sizes_mib)
    session.measure([case(flavour, body) for flavour in PYTHONS for body in ("launch", "bandwidth")
                     for case in (plain, raympijob)], options.repeats, options.warmup)

    def wall(case: Case) -> float:
        return session.median(f"{case.method}/{RANKS}/launch")

    def gib_s(case: Case) -> float:
        return session.median(f"{case.method}/{RANKS}/bandwidth", lambda s: (s.result or {}).get(str(mib))) / 2**30

    rows, overheads, targets = [], {}, []
    for flavour in PYTHONS:
        baseline, ours = plain(flavour, "launch"), raympijob(flavour, "launch")
        overheads[flavour] = wall(ours) - wall(baseline)
        floor, achieved = gib_s(baseline), gib_s(ours)
        rows.append([flavour, seconds(wall(baseline)), seconds(wall(ours)), f"{overheads[flavour]:+.2f}",
                     f"{floor:.2f}", f"{achieved:.2f}", f"{achieved / floor:.2f}"])
        targets.append(Target(f"{flavour}: bandwidth ratio, {mib} MiB >= {TARGET_RATIO}", f"{achieved / floor:.2f}",
                              achieved / floor >= TARGET_RATIO))
    for flavour in PYTHONS:
        if flavour != "openmpi":
            limit = overheads["openmpi"] + OVERHEAD_MARGIN_S
            targets.append(Target(f"{flavour}: launch overhead <= Open MPI's + {OVERHEAD_MARGIN_S} s = {limit:.2f} s",
                                  f"{overheads[flavour]:+.2f} s", overheads[flavour] <= limit))

    def plot(ax):
        ax.bar(list(PYTHONS), [overheads[f] for f in PYTHONS])
        ax.set_ylabel("RayMPIJob launch minus the plain launcher's (s)")

    notes = (f"Plain launcher: the flavour's own (`mpirun --mca btl ^ofi`, as RayMPIJob runs Open MPI's ranks; "
             f"`mpiexec`, `mpiexec.hydra`) running the same body in the flavour's venv. Medians of {options.repeats} runs each; bandwidth = {mib} MiB over the median time of "
             f"one `Allreduce` ({options.iterations} iterations per run).")
    return Section(f"MPI flavours, {RANKS} ranks", ["flavour", "launch, plain s", "launch, RayMPIJob s", "overhead s",
                                                   f"{mib} MiB plain GiB/s", "RayMPIJob GiB/s", "ratio"],
                   rows, targets, notes, plot)
