"""Processes seen in /proc: start times (as wall-clock seconds comparable with `time.time()`), parents and children,
CPU time and memory."""

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


def name(pid: int) -> str:
    """The command name of `pid`."""
    return _stat(pid)[0]


def alive(pid: int, started_at: float) -> bool:
    """The process `pid` that started at `started_at` (not a later one with its pid) runs, or sleeps:
    it is neither gone nor a zombie."""
    try:
        return _stat(pid)[1][0] != "Z" and abs(started(pid) - started_at) < 0.05
    except OSError:  # gone, or exited while /proc was read (ESRCH)
        return False


def cpu_s(pid: int) -> float:
    """CPU time (user + system) that `pid` has used."""
    fields = _stat(pid)[1]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def named(names) -> list[int]:
    """The processes whose command name is one of `names`."""
    return [pid for pid, (name, _) in _all() if name in names]


TEMPLATE = "-m raympi.template "  # in the command line of a template (raympi.template)
SHIM = "/raympi/shim.py "  # in the command line of a shim (raympi.shim)


def rank_of(pid: int) -> int:
    """The rank process that a launcher's child `pid` is: itself or, for a shim (raympi.shim), the process a template
    forked for it: the template's child that holds the shim's stderr (a pipe of the launcher's, one per rank). The
    shim itself while its rank is not forked (yet)."""
    try:
        if not is_shim(pid):
            return pid
        stderr = os.readlink(f"/proc/{pid}/fd/2")
    except OSError:  # gone meanwhile
        return pid
    for template in templates():
        for child in children(template):
            if stderr in _open_files(child):
                return child
    return pid


def templates() -> list[int]:
    """The rank templates (raympi.template) running; not the ranks they forked, which show the same command line."""
    found = running(TEMPLATE)
    return [pid for pid in found if parent(pid) not in found]


def parent(pid: int) -> int:
    """The parent of `pid`; 0 once it is gone."""
    try:
        return int(_stat(pid)[1][1])
    except OSError:
        return 0


def is_shim(pid: int) -> bool:
    """Whether `pid` is a shim: a Python running shim.py (its launcher's command line names shim.py too)."""
    try:
        return name(pid).startswith("python") and SHIM in title(pid)
    except OSError:  # gone meanwhile (name's /proc read)
        return False


def _open_files(pid: int) -> set[str]:
    try:
        return {os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")}
    except OSError:  # gone meanwhile, or a descriptor closed meanwhile
        return set()


def running(text: str) -> list[int]:
    """The processes whose command line holds `text`."""
    return [pid for pid, _ in _all() if text in title(pid)]


def children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    return [child for child, (_, fields) in _all() if int(fields[1]) == pid]


def _all():
    """(pid, _stat(pid)) of every process."""
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                yield int(entry.name), _stat(int(entry.name))
            except OSError:  # it exited meanwhile
                pass


def memory_mb(pid: int) -> dict:
    """{"rss": MB, "pss": MB} of `pid`, from /proc/<pid>/smaps_rollup (MB = 10^6 bytes)."""
    with open(f"/proc/{pid}/smaps_rollup") as f:
        kib = {line.split(":")[0].lower(): int(line.split()[1]) for line in f if line.startswith(("Rss:", "Pss:"))}
    return {name: kib[name] * 1024 / 1e6 for name in ("rss", "pss")}


def title(pid: int) -> str:
    """The command line as the process shows it (Ray workers set theirs, e.g. "ray::World"); "" once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            return f.read().replace("\0", " ").strip()
    except OSError:
        return ""
