"""Run the benchmarks, print the table, write table.md, results.json and plot.png:

    python -m benchmarks [--repeats 3] [--out benchmarks/results]     # make bench

Sections are modules with `run(session, options) -> Section`. Horovod's needs Horovod installed (`make bench`
does it); the multi-node one needs root (it builds a cluster of network namespaces) and is left out without; the
deployed one (root, podman) runs only when named.
"""

import argparse
import os
import sys
from pathlib import Path

from benchmarks import bandwidth, deployed, flavours, horovod, launch, multinode, repeated, report, scaling
from benchmarks.harness import ROOT, Session

SECTIONS = {"launch": launch, "bandwidth": bandwidth, "scaling": scaling, "horovod": horovod, "repeated": repeated,
            "flavours": flavours, "multinode": multinode, "deployed": deployed}
# "deployed" builds images and clusters of containers (~20 min): asked for by name only.
DEFAULT_SECTIONS = [name for name in SECTIONS if name != "deployed" and (name != "multinode" or os.geteuid() == 0)]


def at_least(minimum: int):
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, not {value}")
        return value

    return parse


def options(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=at_least(1), default=3, help="timed runs of every case (after the warm-up)")
    parser.add_argument("--warmup", type=at_least(0), default=1, help="untimed runs of every case first")
    parser.add_argument("--launch-ranks", type=at_least(2), nargs="+", default=[2, 4])
    parser.add_argument("--scaling-ranks", type=at_least(2), nargs="+", default=[2, 4, 8])
    parser.add_argument("--repeated-ranks", type=at_least(2), nargs="+", default=[2, 4],
                        help="ranks of the repeated calls (their rounds: --repeats)")
    parser.add_argument("--nodes", type=at_least(1), nargs="+", default=[1, 2, 4, 8],
                        help="Ray nodes (multinode); the first is the baseline")
    parser.add_argument("--sizes-mib", type=at_least(1), nargs="+", default=[1, 16, 64])
    parser.add_argument("--iterations", type=at_least(1), default=10, help="allreduces per size in one bandwidth run")
    parser.add_argument("--steps", type=at_least(1), default=200, help="timed training steps in one Horovod run")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=DEFAULT_SECTIONS,
                        help="default: all (multinode only as root)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    chosen = options(argv)
    about = report.machine()
    session = Session({"sizes_mib": chosen.sizes_mib, "iterations": chosen.iterations, "steps": chosen.steps},
                      ray_cpus=max(os.cpu_count() or 1, *chosen.launch_ranks, *chosen.scaling_ranks))
    try:
        sections = [SECTIONS[name].run(session, chosen) for name in chosen.sections]
    finally:
        session.close()
    about["load average (1, 5, 15 min) at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(report.write(chosen.out, sections, about, session.samples))
    print(f"written: {chosen.out}/table.md, results.json, plot.png", file=sys.stderr)


if __name__ == "__main__":
    main()
