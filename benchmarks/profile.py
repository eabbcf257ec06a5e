"""Where the time of one launch goes, per process: py-spy samples every Python process that the raylet
starts (Ray's setup_worker, every rank) during one warm call, and this prints, for each, the time
spent in its busiest frames. The evidence behind benchmarks/README.md's cost breakdown.

    python -m benchmarks.profile ray|raympijob RANKS [--top 25]     # needs py-spy (pip install py-spy)
"""

import argparse
import collections
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ray

from benchmarks import launchers, procinfo
from benchmarks.harness import ROOT, Session
from benchmarks.procinfo import SHIM

RATE = 100  # samples per second; with --idle every sample is 1/RATE s of wall time


def _py_spy() -> str:
    found = shutil.which("py-spy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not found:
        raise SystemExit("py-spy is not installed: pip install py-spy (or pip install -e '.[bench]')")
    return found


def record(case, speedscope: str) -> float:
    """Run `case` once under py-spy attached to the raylet and to each rank template (raympi.template), following their
    children (`speedscope`.0, .1, ...); return the wall time."""
    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    spies = [subprocess.Popen([_py_spy(), "record", "--subprocesses", "--idle", "--rate", str(RATE), "--format",
                               "speedscope", "--output", f"{speedscope}.{i}", "--pid", str(pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i, pid in enumerate([raylet, *procinfo.templates()])]
    time.sleep(2)  # py-spy attaches
    start = time.time()
    case.run()
    wall = time.time() - start
    time.sleep(1)
    for spy in spies:
        spy.send_signal(signal.SIGINT)
        spy.wait(timeout=60)
    return wall


STARTED_FOR_THE_CALL = ("raympi.runner", "setup_worker.py")


def busiest_frames(speedscope: str, top: int):
    """Per main thread of each process started for the call (Ray's setup_worker, the ranks) in every file
    `speedscope`.N: (process, seconds sampled, [(seconds, frame), ...])."""
    for path in sorted(Path(speedscope).parent.glob(f"{Path(speedscope).name}.*")):
        yield from _busiest_frames(json.loads(path.read_text()), top)


def _busiest_frames(data: dict, top: int):
    frames = data["shared"]["frames"]

    def label(i):
        where = frames[i].get("file", "").split("site-packages/")[-1].replace(f"{ROOT}/", "")
        return f"{frames[i]['name']} ({where}:{frames[i].get('line')})"

    def shown(i):  # the import machinery's frames only repeat what the frame above them says
        return not frames[i]["name"].startswith("process ") and not frames[i].get("file", "").startswith("<frozen")

    for profile in data["profiles"]:
        _, pid, _, tid, *_ = profile["name"].split()
        names = {frames[i]["name"] for stack in profile["samples"] for i in stack}
        command = next((n for n in names if n.startswith(f"process {pid}:")), "")
        forked = "become_rank" in names  # a rank forked from a template (raympi.forked), not the template itself
        if pid != tid or SHIM in command or not (forked or any(m in command for m in STARTED_FOR_THE_CALL)):
            continue
        stacks = [[i for i in s if shown(i)] for s in profile["samples"]]
        inclusive = collections.Counter(f for stack in stacks for f in dict.fromkeys(map(label, stack)))
        yield command[:160], len(profile["samples"]) / RATE, [(n / RATE, f) for f, n in inclusive.most_common(top)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("method", choices=("ray", "raympijob"))
    parser.add_argument("ranks", type=int)
    parser.add_argument("--top", type=int, default=25)
    chosen = parser.parse_args(argv)
    session = Session({}, ray_cpus=max(os.cpu_count() or 1, chosen.ranks))
    try:
        factory = {"ray": launchers.ray_runtime_env, "raympijob": launchers.raympijob}[chosen.method]
        case = factory(chosen.ranks, "launch")
        case.run()  # warm-up: Ray's idle workers started, files in the page cache
        with tempfile.TemporaryDirectory() as folder:
            speedscope = os.path.join(folder, "launch")
            wall = record(case, speedscope)
            print(f"one {chosen.method} call on {chosen.ranks} ranks: {wall:.2f} s wall")
            for name, seconds, busiest in busiest_frames(speedscope, chosen.top):
                print(f"\n{name}: sampled for {seconds:.2f} s")
                print("\n".join(f"  {s:6.2f} s  {frame}" for s, frame in busiest))
    finally:
        session.close()


if __name__ == "__main__":
    sys.exit(main())
