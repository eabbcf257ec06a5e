"""Section 1: the wall time of a minimal MPI task (allreduce of one int) by each way of launching it,
minus plain mpirun's, split into phases; and Ray's and flytekit's own cold costs, for the cold target."""

from benchmarks import launchers
from benchmarks.harness import PHASES, Session
from benchmarks.report import Section, Target, seconds

WARM = ("mpirun", "mpirun_btl", "ray", "raympijob")
COLD = {"cold": "raympijob", "kfmpi": "kfmpi"}
# Targets of issue 7.
WARM_OVERHEAD_S = 1.0
COLD_MARGIN = 0.15
# Target of issue 28: a cold world with Ray up (ranks forked from a template) against plain mpirun, like for like.
FORKED_OVERHEAD_S = 0.3


def cases(ranks):
    warm = {"mpirun": launchers.mpirun, "mpirun_btl": launchers.mpirun_btl, "ray": launchers.ray_runtime_env,
            "raympijob": launchers.raympijob}
    for n in ranks:
        yield from (warm[method](n, "launch") for method in WARM)
        yield from (launchers.cold_workflow(kind, n) for kind in COLD.values())
        yield launchers.ray_cold(n)
    yield launchers.cold_workflow("plain", 1)


def run(session: Session, options) -> Section:
    ranks = options.launch_ranks
    session.measure(list(cases(ranks)), options.repeats, options.warmup)
    wall = {(m, n): session.median(f"{m}/{n}/launch") for m in (*WARM, *COLD) for n in ranks}
    rows = []
    for n in ranks:
        for method in (*WARM, *COLD):
            median, floor = wall[method, n], wall["mpirun", n]
            added = "" if method == "mpirun" else f"{median - floor:+.2f}"
            rows.append([n, launchers.LABELS[method], seconds(median), added,
                         *map(seconds, session.median_phases(f"{method}/{n}/launch"))])
    flytekit = session.median("flytekit/1/launch")
    targets = []
    if 2 in ranks:
        added = wall["raympijob", 2] - wall["mpirun", 2]
        targets.append(Target(f"(c) - (a), 2 ranks <= {WARM_OVERHEAD_S:.1f} s", f"{added:.2f} s",
                              added <= WARM_OVERHEAD_S))
    for n in ranks:
        added = wall["raympijob", n] - wall["mpirun_btl", n]
        targets.append(Target(f"(c) - (a'), {n} ranks <= {FORKED_OVERHEAD_S:.1f} s", f"{added:.2f} s",
                              added <= FORKED_OVERHEAD_S))
    for n in ranks:
        ray_cold = session.median(f"ray_cold/{n}/-")
        budget = (1 + COLD_MARGIN) * (ray_cold + wall["mpirun", n] + flytekit)
        targets.append(Target(
            f"(d), {n} ranks <= 1.15 x (Ray cold {ray_cold:.2f} + mpirun {wall['mpirun', n]:.2f} "
            f"+ flytekit workflow {flytekit:.2f}) = {budget:.2f} s",
            f"{wall['cold', n]:.2f} s", wall["cold", n] <= budget))

    def plot(ax):
        labels = [f"{launchers.LABELS[m].split(' ')[0]} {n} ranks" for n in ranks for m in (*WARM, "cold")]
        bottoms = [0.0] * len(labels)
        split = [session.median_phases(f"{m}/{n}/launch") for n in ranks for m in (*WARM, "cold")]
        for phase, medians in zip(PHASES, zip(*split)):
            widths = [median or 0.0 for median in medians]
            ax.barh(labels, widths, left=bottoms, label=phase)
            bottoms = [b + w for b, w in zip(bottoms, widths)]
        ax.invert_yaxis()
        ax.set_xlabel("seconds (median of each phase)")
        ax.legend(fontsize=7)

    notes = (f"Medians of {options.repeats} runs each. Phases (each a median on its own, so they need not add "
             "up to the total): *worker forked* = call start until the process that becomes mpirun is forked; "
             "*ranks started* = until the last rank process exists; *rank 0 ready* = until rank 0 enters the "
             "body; *peers ready* = until the last other rank enters it; *body*; *teardown* = until the call "
             f"returns. Ray cold start + 1 task: {', '.join(seconds(session.median(f'ray_cold/{n}/-')) for n in ranks)}"
             f" s ({'/'.join(map(str, ranks))} CPUs); flytekit one-task workflow, no MPI: {seconds(flytekit)} s.")
    return Section("Launch overhead: allreduce of one int", ["ranks", "how", "wall s", "minus (a)", *PHASES],
                   rows, targets, notes, plot)
