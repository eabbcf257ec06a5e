"""Process start times and parents from /proc, as wall-clock seconds comparable with `time.time()`."""

import os
import time


def _stat(pid: int):
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    name = text[text.index("(") + 1:text.rindex(")")]
    return name, text[text.rindex(")") + 2:].split()


def started(pid: int) -> float:
    """When `pid` started (10 ms resolution: the kernel counts clock ticks since boot)."""
    ticks = int(_stat(pid)[1][19])
    boot = time.time() - time.clock_gettime(time.CLOCK_BOOTTIME)
    return boot + ticks / os.sysconf("SC_CLK_TCK")


def parent(pid: int):
    """(parent pid, parent's command name)."""
    ppid = int(_stat(pid)[1][1])
    return ppid, _stat(ppid)[0]
