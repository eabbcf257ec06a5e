"""Registering the `mpi` runtime env with Ray, and a local Ray that has it."""

import json
import os

import ray

from .config import SCHEMA_PATH

PLUGIN_CLASS = "raympi.plugin.MPIPlugin"
# Rank 0 registers with the raylet only once its whole world is up: mpirun, daemons started through
# Ray on other nodes, every rank's imports and MPI_Init. Past Ray's default (60 s, one Python process's
# start) the raylet starts another world for the same task, which loads the node further, and after 5
# such retries fails the task with "Failed to startup worker".
WORLD_START_TIMEOUT = {"RAY_worker_register_timeout_seconds": "300"}
# What a Ray node's environment needs for the `mpi` runtime env (e.g. in a KubeRay pod).
PLUGIN_ENV = {"RAY_RUNTIME_ENV_PLUGINS": json.dumps([{"class": PLUGIN_CLASS}]), **WORLD_START_TIMEOUT}


def registration_env(environ=os.environ) -> dict:
    """Environment variables that make a Ray started with them know the `mpi` runtime env (merged with
    plugins and schemas already registered in `environ`) and wait for MPI worlds to start."""
    plugins = json.loads(environ.get("RAY_RUNTIME_ENV_PLUGINS") or "[]")
    if all(p.get("class") != PLUGIN_CLASS for p in plugins):
        plugins.append({"class": PLUGIN_CLASS})
    schemas = [s for s in (environ.get("RAY_RUNTIME_ENV_PLUGIN_SCHEMAS") or "").split(",") if s]
    if str(SCHEMA_PATH) not in schemas:
        schemas.append(str(SCHEMA_PATH))
    timeout = {name: environ.get(name, value) for name, value in WORLD_START_TIMEOUT.items()}
    return {"RAY_RUNTIME_ENV_PLUGINS": json.dumps(plugins), "RAY_RUNTIME_ENV_PLUGIN_SCHEMAS": ",".join(schemas),
            **timeout}


def init_ray(**ray_init_kwargs):
    """`ray.init(**ray_init_kwargs)` with the `mpi` runtime env registered in the Ray it starts."""
    os.environ.update(registration_env())
    return ray.init(**ray_init_kwargs)
