"""Section 2: achieved allreduce bandwidth of float64 buffers across 2 ranks, RayMPIJob vs plain mpirun.

Each run launches the world once and times every size inside the body (median of the iterations);
the figure is the median over runs."""

from benchmarks import launchers
from benchmarks.harness import Session
from benchmarks.report import Section, Target

RANKS = 2
TARGET_RATIO = 0.95
METHODS = ("mpirun", "raympijob")


def run(session: Session, options) -> Section:
    cases = [launchers.mpirun(RANKS, "bandwidth"), launchers.raympijob(RANKS, "bandwidth")]
    session.measure(cases, options.repeats, options.warmup)

    def gib_s(method, mib):
        return session.median(f"{method}/{RANKS}/bandwidth", lambda s: (s.result or {}).get(str(mib))) / 2**30

    rows, targets = [], []
    for mib in options.sizes_mib:
        floor, ours = gib_s("mpirun", mib), gib_s("raympijob", mib)
        rows.append([f"{mib} MiB", f"{floor:.2f}", f"{ours:.2f}", f"{ours / floor:.2f}"])
        targets.append(Target(f"bandwidth ratio, {mib} MiB >= {TARGET_RATIO}", f"{ours / floor:.2f}",
                              ours / floor >= TARGET_RATIO))

    def plot(ax):
        width = 0.4
        for i, method in enumerate(METHODS):
            ax.bar([x + i * width for x in range(len(options.sizes_mib))],
                   [gib_s(method, mib) for mib in options.sizes_mib], width, label=launchers.LABELS[method])
        ax.set_xticks([x + width / 2 for x in range(len(options.sizes_mib))], [f"{m} MiB" for m in options.sizes_mib])
        ax.set_ylabel("GiB/s (buffer size / time of one allreduce)")
        ax.legend(fontsize=7)

    notes = (f"Bandwidth = buffer size / median time of one `Allreduce` ({options.iterations} iterations after "
             f"one warm-up, per run); medians of {options.repeats} runs.")
    return Section(f"Allreduce bandwidth, {RANKS} ranks (GiB/s)", ["buffer", "(a) mpirun", "(c) RayMPIJob", "ratio"],
                   rows, targets, notes, plot)
