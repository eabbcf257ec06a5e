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

from benchmarks import launchers
from benchmarks.harness import ROOT, Session

RATE = 100  # samples per second; with --idle every sample is 1/RATE s of wall time


def _py_spy() -> str:
    found = shutil.which("py-spy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if not found:
        raise SystemExit("py-spy is not installed: pip install py-spy (or pip install -e '.[bench]')")
    return found


def record(case, speedscope: str) -> float:
    """Run `case` once under py-spy attached to the raylet (following its children); return the wall time."""
    raylet = ray._private.worker._global_node.all_processes["raylet"][0].process.pid
    spy = subprocess.Popen([_py_spy(), "record", "--subprocesses", "--idle", "--rate", str(RATE), "--format",
                            "speedscope", "--output", speedscope, "--pid", str(raylet)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)  # py-spy attaches
    start = time.time()
    case.run()
    wall = time.time() - start
    time.sleep(1)
    spy.send_signal(signal.SIGINT)
    spy.wait(timeout=60)
    return wall


STARTED_FOR_THE_CALL = ("raympi.runner", "setup_worker.py")


def busiest_frames(speedscope: str, top: int):
    """Per main thread of each process started for the call (Ray's setup_worker, the ranks):
    (process, seconds sampled, [(seconds, frame), ...])."""
    data = json.loads(Path(speedscope).read_text())
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
        if pid != tid or not any(marker in command for marker in STARTED_FOR_THE_CALL):
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
        with tempfile.NamedTemporaryFile(suffix=".json") as speedscope:
            wall = record(case, speedscope.name)
            print(f"one {chosen.method} call on {chosen.ranks} ranks: {wall:.2f} s wall")
            for name, seconds, busiest in busiest_frames(speedscope.name, chosen.top):
                print(f"\n{name}: sampled for {seconds:.2f} s")
                print("\n".join(f"  {s:6.2f} s  {frame}" for s, frame in busiest))
    finally:
        session.close()


if __name__ == "__main__":
    sys.exit(main())
