"""Warm worlds: on the embedded Ray, the MPI world for the next call of a CPU task is started as soon as a call ends
(an idle World actor: its ranks up, their imports done, no CPU used or reserved), and that call runs in it if it
asks for the same world (the same rank 0 runtime env) and the world is whole. At most one waits at a time;
RAYMPI_WARM_WORLDS=0 turns them off. A world runs one call, then is ended; one still waiting when the driver exits
is left to start, then ended (see _end_waiting)."""

import atexit
import contextlib
import json
from dataclasses import dataclass
from typing import Iterator, Optional

import psutil
import ray
from flytekit import logger
from ray.exceptions import RayError

from .config import switch
from .ranks import World

WARM_WORLDS_VAR = "RAYMPI_WARM_WORLDS"
# How long a call waits for a warm world still starting before it starts one of its own.
START_TIMEOUT_S = 60.0
# How long an exiting driver waits for the waiting world to start, then for its launcher to end.
EXIT_TIMEOUT_S = 15.0
# Idle, it holds nothing: its call runs within the call's reservation.
_WORLD = ray.remote(num_cpus=0, max_restarts=0, max_task_retries=0)(World)


@dataclass(frozen=True)
class _Waiting:
    gcs_address: str  # the Ray it lives in
    runtime_env: str  # its rank 0's, as JSON
    world: "ray.actor.ActorHandle"


_waiting: Optional[_Waiting] = None


def enabled() -> bool:
    """RAYMPI_WARM_WORLDS: 1 (the default) keeps a warm world for the next call, 0 none."""
    return switch(WARM_WORLDS_VAR, on="keeps a warm world for the next call", off="keeps none")


@contextlib.contextmanager
def taken(runtime_env: Optional[dict]) -> Iterator[Optional["ray.actor.ActorHandle"]]:
    """The warm world for a call with this rank 0 runtime env (None: a call that takes none), once it is up and
    whole; None if there is none (one waiting for another world is ended) or it did not start or lost a rank (the
    call then starts a world of its own, which reports what fails). The world ends with the block, however it
    ends: a world runs one call."""
    world = _take(runtime_env)
    try:
        yield world
    finally:
        if world is not None:
            ray.kill(world)


def _take(runtime_env: Optional[dict]) -> Optional["ray.actor.ActorHandle"]:
    waiting = _leave_waiting()
    if waiting is None:
        return None
    if runtime_env is None or waiting.runtime_env != _key(runtime_env):
        ray.kill(waiting.world)
        return None
    try:
        ray.get(waiting.world.launcher_pid.remote(), timeout=START_TIMEOUT_S)  # waiting costs less than a new one
        return waiting.world
    except RayError as error:  # GetTimeoutError, RayActorError, RuntimeEnvSetupError, a rank lost (RayTaskError)...
        logger.warning(f"RayMPIJob: the warm MPI world did not start or lost a rank ({type(error).__name__}); "
                       "starting another")
        ray.kill(waiting.world)
        return None


def start(runtime_env: dict, name: str) -> None:
    """Start the warm world for the next call with this rank 0 runtime env."""
    global _waiting
    world = _WORLD.options(name=name, runtime_env=runtime_env).remote()
    _waiting = _Waiting(ray.get_runtime_context().gcs_address, _key(runtime_env), world)
    # Run before Ray's own exit hook, which ray.init registered (perhaps again, since the last start).
    atexit.unregister(_end_waiting)
    atexit.register(_end_waiting)


def _leave_waiting() -> Optional[_Waiting]:
    """The waiting world, which no longer waits; None if there is none in the Ray connected to (one in a Ray that
    is gone went with it)."""
    global _waiting
    waiting, _waiting = _waiting, None
    if waiting is None or not ray.is_initialized() or waiting.gcs_address != ray.get_runtime_context().gcs_address:
        return None
    return waiting


def _end_waiting() -> None:
    """Let the waiting world start, end it and wait for its launcher to end: a world killed while its ranks start
    leaves flytekit's directories of the ranks still importing it (each removes them once imported, see
    ranks._leaving_no_flytekit_dirs), and MPICH's shared memory. What a killed launcher of Open MPI leaves is removed
    once it is gone (see raympi.launcher_dir)."""
    waiting = _leave_waiting()
    if waiting is None:
        return
    try:
        launcher = psutil.Process(ray.get(waiting.world.launcher_pid.remote(), timeout=EXIT_TIMEOUT_S))
    except (RayError, psutil.Error):  # it did not start, or is gone: nothing of it to wait for
        launcher = None
    ray.kill(waiting.world)
    if launcher is not None:
        with contextlib.suppress(psutil.Error):
            launcher.wait(timeout=EXIT_TIMEOUT_S)


def _key(runtime_env: dict) -> str:
    return json.dumps(runtime_env, sort_keys=True)
