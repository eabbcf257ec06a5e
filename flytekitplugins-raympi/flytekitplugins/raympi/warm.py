"""Warm worlds: on the embedded Ray, the MPI world for the next call of a CPU task is started as soon as a call ends
(an idle World actor: its ranks up, their imports done, no CPU used or reserved), and that call runs in it if it
asks for the same world (the same rank 0 runtime env). At most one waits at a time; RAYMPI_WARM_WORLDS=0 turns them
off. A world runs one call, then is ended."""

import json
import os
from dataclasses import dataclass
from typing import Optional

import ray
from flytekit import logger
from ray.exceptions import RayError

from .ranks import World

WARM_WORLDS_VAR = "RAYMPI_WARM_WORLDS"
# How long a call waits for a warm world still starting before it starts one of its own.
START_TIMEOUT_S = 60.0
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
    value = os.environ.get(WARM_WORLDS_VAR, "1")
    if value not in ("0", "1"):
        raise ValueError(f"{WARM_WORLDS_VAR}={value!r}: 1 keeps a warm world for the next call, 0 keeps none")
    return value == "1"


def take(runtime_env: Optional[dict]) -> Optional["ray.actor.ActorHandle"]:
    """The warm world for a call with this rank 0 runtime env (None: a call that takes none), once it is up; None if
    there is none (one waiting for another world is ended) or it did not start (the call then starts a world of its
    own, which reports what fails)."""
    global _waiting
    waiting, _waiting = _waiting, None
    if waiting is None or waiting.gcs_address != ray.get_runtime_context().gcs_address:
        return None  # none, or in a Ray that is gone with all its worlds
    if runtime_env is None or waiting.runtime_env != _key(runtime_env):
        ray.kill(waiting.world)
        return None
    try:
        ray.get(waiting.world.__ray_ready__.remote(), timeout=START_TIMEOUT_S)  # waiting costs less than a new one
        return waiting.world
    except RayError as error:  # GetTimeoutError, RayActorError, RuntimeEnvSetupError, ...
        logger.warning(f"RayMPIJob: the warm MPI world did not start ({type(error).__name__}); starting another")
        ray.kill(waiting.world)
        return None


def start(runtime_env: dict, name: str) -> None:
    """Start the warm world for the next call with this rank 0 runtime env."""
    global _waiting
    world = _WORLD.options(name=name, runtime_env=runtime_env).remote()
    _waiting = _Waiting(ray.get_runtime_context().gcs_address, _key(runtime_env), world)


def _key(runtime_env: dict) -> str:
    return json.dumps(runtime_env, sort_keys=True)
