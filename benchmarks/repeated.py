"""Section 6: one task called again and again in one process, Ray up (issue 15). Per call: plain mpirun, the `mpi`
runtime env, and a RayMPIJob task with its warm worlds on and off (RAYMPI_WARM_WORLDS=0), back to back and GAP_S
apart; each turn's first call is a warm-up. And the memory an idle warm world holds. Each number of ranks runs on
the Ray that RayMPIJob starts itself for it (its embedded Ray, the only one where it keeps warm worlds), in place of
the session's."""

import dataclasses
import os
import statistics
import time

from benchmarks import launchers, procinfo
from benchmarks.harness import MPIRUN_NAMES, PHASES, Case, Sample, Session
from benchmarks.report import Section, Target, seconds

METHODS = {"mpirun": launchers.mpirun, "ray": launchers.ray_runtime_env, "raympijob": launchers.raympijob,
           "raympijob_cold": launchers.raympijob_cold}
GAPS_S = (0.0, 1.0, 5.0)  # from one call's end (its processes gone) to the next call
REPEATED_CALL_S = 0.6  # target of issue 15: a repeated RayMPIJob call of 2 ranks
WARM_RANK0_TITLE = "ray::World"  # how Ray titles rank 0 of a warm world: an idle actor of class World
IDLE_CPU_S_PER_S = 0.2  # a world using less CPU than this is idle (importing, its ranks use every core)
IDLE_SAMPLE_S = 5.0  # an idle world's CPU is measured over this long
START_TIMEOUT_S = 120.0


def spacing(gap_s: float) -> str:
    return f"{gap_s:g} s apart" if gap_s else "back to back"


def case(method: str, ranks: int, gap_s: float) -> Case:
    return dataclasses.replace(METHODS[method](ranks, "launch"), method=f"{method}+{gap_s:g}s")


def key(method: str, ranks: int, gap_s: float) -> str:
    """case(method, ranks, gap_s).key"""
    return f"{method}+{gap_s:g}s/{ranks}/launch"


def warm_world(ranks: int) -> dict[str, int] | None:
    """The processes of the warm world of `ranks` ranks once all its ranks run ({"mpirun": pid, "rank 0": pid, ...,
    and for ranks forked from a template "shim 0": pid, ...}); else None."""
    for pid in procinfo.named(MPIRUN_NAMES):
        started = procinfo.children(pid)
        members = [procinfo.rank_of(child) for child in started]
        rank0 = [p for p in members if procinfo.title(p).split(" ")[0] == WARM_RANK0_TITLE]
        if rank0 and len(members) == ranks and not any(map(procinfo.is_shim, members)):  # every rank forked
            others = (p for p in members if p not in rank0)
            return {"mpirun": pid, "rank 0": rank0[0], **{f"rank {i}": p for i, p in enumerate(others, 1)},
                    **{f"shim {i}": p for i, p in enumerate(started) if p not in members}}
    return None


def world_cpu_s(pids) -> float:
    return sum(map(procinfo.cpu_s, pids))


def wait_until_idle(ranks: int) -> dict[str, int]:
    """The warm world of `ranks` ranks (as warm_world()) once it is up and used < IDLE_CPU_S_PER_S over a second."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if not (world := warm_world(ranks)):
            time.sleep(0.2)
            continue
        before = world_cpu_s(world.values())
        time.sleep(1.0)
        if world_cpu_s(world.values()) - before < IDLE_CPU_S_PER_S:
            return world
    raise TimeoutError(f"no idle warm world of {ranks} ranks {START_TIMEOUT_S:g} s after a RayMPIJob call")


def idle_warm_world(ranks: int) -> Sample:
    """Call the RayMPIJob task once, then measure the warm world it leaves once idle, and the template its ranks
    forked from. Sample: wall = from the call's end until it was seen idle; result = each process's RSS and PSS (MB),
    the CPU-s the world's processes took to get there (its start: a floor on back-to-back calls, each of which needs
    a world started), their CPU-s per s while idle; the template's memory, idle CPU-s per s and start (from its
    process's start until it listened)."""
    launchers.raympijob(ranks, "launch").run()
    end = time.time()
    world = wait_until_idle(ranks)
    up = time.time() - end
    template = [pid for pid in procinfo.templates() if pid == procinfo.parent(world["rank 0"])]  # if forked
    memory = {name: procinfo.memory_mb(pid) for name, pid in world.items()}
    before, template_before = world_cpu_s(world.values()), world_cpu_s(template)
    time.sleep(IDLE_SAMPLE_S)
    result = {"memory_mb": memory, "start_cpu_s": before,
              "idle_cpu_s_per_s": (world_cpu_s(world.values()) - before) / IDLE_SAMPLE_S}
    if template:
        listening = os.stat(procinfo.title(template[0]).split()[3]).st_mtime
        result["template"] = {**procinfo.memory_mb(template[0]), "start_s": listening - procinfo.started(template[0]),
                              "idle_cpu_s_per_s": (world_cpu_s(template) - template_before) / IDLE_SAMPLE_S}
    return Sample(up, {}, result)


def memory_note(ranks: int, sample: Sample) -> str:
    memory = sample.result["memory_mb"]
    total = {kind: sum(m[kind] for m in memory.values()) for kind in ("rss", "pss")}
    each = "; ".join(f"{name} {m['rss']:.0f} / {m['pss']:.0f}" for name, m in memory.items())
    start = sample.result["start_cpu_s"]
    template = sample.result.get("template")
    of_template = (f" Its node's template (raympi.template): RSS {template['rss']:.0f} MB, PSS {template['pss']:.0f} "
                   f"MB, {template['idle_cpu_s_per_s']:.3f} CPU-s/s while idle, ready {template['start_s']:.2f} s "
                   "after it started." if template else " No template (RAYMPI_TEMPLATES=0).")
    return (f"{ranks} ranks: RSS {total['rss']:.0f} MB, PSS {total['pss']:.0f} MB ({each}); seen idle "
            f"{sample.wall:.1f} s after the call returned; its start took {start:.2f} CPU-s, so back-to-back calls, "
            f"a world started for each, take at least {start / launchers.CORES:.2f} s each on {launchers.CORES} "
            f"cores; {sample.result['idle_cpu_s_per_s']:.3f} CPU-s/s while idle.{of_template}")


def run(session: Session, options) -> Section:
    ranks, warmup = options.repeated_ranks, max(1, options.warmup)
    # Each number of ranks on the Ray a process calling such a task starts: a Ray of more CPUs than the task takes
    # may start spare worlds for its rank 0 (Ray's prestart), which would serve the next call.
    for n in ranks:
        with session.product_ray(launchers.raympijob_cold(n, "launch").run):
            for gap in GAPS_S:
                session.measure_repeated([case(m, n, gap) for m in METHODS], options.repeats, warmup, gap)
            session.samples[f"warm_world/{n}/idle"] = [idle_warm_world(n)]
    wall = {(m, n, g): session.median(key(m, n, g)) for m in METHODS for n in ranks for g in GAPS_S}
    order = [(m, n, g) for g in GAPS_S for n in ranks for m in METHODS]

    def plot(ax):
        ax.barh([f"{launchers.LABELS[m].split(' ')[0]} {n} ranks, {spacing(g)}" for m, n, g in order],
                [wall[row] for row in order])
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=6)
        ax.set_xlabel("seconds per call (median)")

    rows = [[n, launchers.LABELS[m], spacing(g), seconds(wall[m, n, g]), f"{wall[m, n, g] / wall['mpirun', n, g]:.2f}",
             f"{sum(s.prestarted for s in session.samples[key(m, n, g)])} of {options.repeats}",
             *map(seconds, session.median_phases(key(m, n, g)))] for m, n, g in order]
    targets = [Target(f"(c) repeated call, 2 ranks, {spacing(g)} <= {REPEATED_CALL_S} s",
                      f"{wall['raympijob', 2, g]:.2f} s", wall["raympijob", 2, g] <= REPEATED_CALL_S)
               for g in GAPS_S if 2 in ranks]
    headers = ["ranks", "how", "calls", "per call s", "ratio to (a)", "world already running", *PHASES]
    return Section("Repeated calls: one task called again in one process, Ray up", headers, rows, targets,
                   notes(session, options, warmup), plot)


def notes(session: Session, options, warmup: int) -> str:
    ranks = options.repeated_ranks
    between = {g: statistics.median(s.since_previous for m in METHODS for n in ranks
                                    for s in session.samples[key(m, n, g)]) for g in GAPS_S}
    idle = " ".join(memory_note(n, session.samples[f"warm_world/{n}/idle"][0]) for n in ranks)
    return (f"Medians of {options.repeats} timed calls per row. Each number of ranks runs on the Ray that RayMPIJob "
            "starts itself for it (its embedded Ray, max(cores, ranks) CPUs; warm worlds are kept only there). Each "
            f"turn of a case is {warmup} untimed call(s), then the timed one, back to back or "
            f"{' or '.join(f'{g:g}' for g in GAPS_S[1:])} s after "
            "the previous call ended, once its processes are gone (median time between calls: "
            f"{', '.join(f'{spacing(g)} {between[g]:.2f} s' for g in GAPS_S)}); turns go round-robin over the cases "
            "of one spacing and ranks. Ratio: against (a) plain mpirun, same ranks and spacing, this run. World "
            "already running: timed calls whose mpirun had started before the call (a warm world; for (b) and (c'), "
            "a spare: Ray starts spare workers for a runtime env, and here a worker is a whole world). Phases as "
            "in the launch table, from the call's start: of a world started before the call, what the call still "
            "waited for (a world up already: none of *worker forked* and *ranks started*). Idle warm "
            "world, all its processes (mpirun, ranks and the shims of ranks forked from a template; RSS / PSS in MB of 10^6 bytes, /proc/<pid>/smaps_rollup): "
            + idle)
