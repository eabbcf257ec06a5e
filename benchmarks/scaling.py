"""Section 3: launch time of the one-int allreduce for more ranks than cores (oversubscribed), by plain
mpirun, the mpi runtime env and RayMPIJob with Ray running."""

from benchmarks import launchers
from benchmarks.harness import Session
from benchmarks.report import Section, seconds

METHODS = {"mpirun": launchers.mpirun, "ray": launchers.ray_runtime_env, "raympijob": launchers.raympijob}


def run(session: Session, options) -> Section:
    ranks = options.scaling_ranks
    cases = [launch(n, "launch") for n in ranks for launch in METHODS.values()]
    session.measure(cases, options.repeats, options.warmup)
    wall = {(m, n): session.median(f"{m}/{n}/launch") for m in METHODS for n in ranks}
    rows = [[n, *(seconds(wall[m, n]) for m in METHODS), *(f"{wall[m, n] - wall['mpirun', n]:+.2f}"
                                                           for m in METHODS if m != "mpirun")] for n in ranks]

    def plot(ax):
        for method in METHODS:
            ax.plot(ranks, [wall[method, n] for n in ranks], marker="o", label=launchers.LABELS[method])
        ax.set_xticks(ranks)
        ax.set_xlabel(f"ranks ({launchers.CORES} cores)")
        ax.set_ylabel("seconds (median)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)

    headers = ["ranks", *(launchers.LABELS[m] for m in METHODS), "(b) - (a)", "(c) - (a)"]
    return Section("Scaling: launch time by ranks (oversubscribed)", headers, rows,
                   notes=f"Medians of {options.repeats} runs; cases shared with the launch section are measured once.",
                   plot=plot)
