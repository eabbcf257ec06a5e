"""Section 4: Horovod throughput (images/s of the training example's step) on 2 ranks, RayMPIJob vs plain
mpirun. The model is small, so a step is mostly Horovod's allreduce: what the launcher could slow down."""

from benchmarks import launchers
from benchmarks.harness import Session
from benchmarks.report import Section, Target

RANKS = 2
TARGET_RATIO = 0.95


def run(session: Session, options) -> Section:
    session.measure([launchers.mpirun(RANKS, "horovod"), launchers.raympijob(RANKS, "horovod")],
                    options.repeats, options.warmup)
    floor, ours = (session.median(f"{method}/{RANKS}/horovod", lambda s: s.result) for method in ("mpirun", "raympijob"))
    ratio = ours / floor

    def plot(ax):
        ax.bar([launchers.LABELS["mpirun"], launchers.LABELS["raympijob"]], [floor, ours])
        ax.set_ylabel("images/s (all ranks)")
        ax.tick_params(axis="x", labelsize=7)

    notes = f"{options.steps} timed steps after 10 warm-up steps, per run; medians of {options.repeats} runs."
    return Section(f"Horovod training step, {RANKS} ranks (images/s)", ["(a) mpirun", "(c) RayMPIJob", "ratio"],
                   [[f"{floor:.0f}", f"{ours:.0f}", f"{ratio:.2f}"]],
                   [Target(f"Horovod throughput ratio >= {TARGET_RATIO}", f"{ratio:.2f}", ratio >= TARGET_RATIO)],
                   notes, plot)
