"""Registering the `mpi` runtime env with Ray, and a local Ray that has it."""

import json
import os

from .config import SCHEMA_PATH
from .ray_internals import RUNTIME_ENV_PLUGIN_SCHEMAS, RUNTIME_ENV_PLUGINS, WORKER_REGISTER_TIMEOUT, require_tested_ray

PLUGIN_CLASS = "raympi.plugin.MPIPlugin"
# Raylet settings that MPI worlds need (Ray reads RAY_<setting> where the raylet starts).
RAYLET_ENV = {
    # Rank 0 registers with the raylet only once its whole world is up: mpirun, daemons started on other
    # nodes, every rank's imports and MPI_Init. Past Ray's default (60 s, one Python process's
    # start) the raylet starts another world for the same task, and after 5 such retries fails the task
    # with "Failed to startup worker".
    WORKER_REGISTER_TIMEOUT: "300",
}
# What a Ray node's environment needs for the `mpi` runtime env (e.g. in a KubeRay pod).
PLUGIN_ENV = {RUNTIME_ENV_PLUGINS: json.dumps([{"class": PLUGIN_CLASS}]), **RAYLET_ENV}


def registration_env(environ=os.environ) -> dict:
    """Environment variables that make a Ray started with them know the `mpi` runtime env (merged with
    plugins and schemas already registered in `environ`) and run MPI worlds (RAYLET_ENV). Raises for a Ray outside
    the tested range."""
    require_tested_ray()
    plugins = json.loads(environ.get(RUNTIME_ENV_PLUGINS) or "[]")
    if all(p.get("class") != PLUGIN_CLASS for p in plugins):
        plugins.append({"class": PLUGIN_CLASS})
    schemas = [s for s in (environ.get(RUNTIME_ENV_PLUGIN_SCHEMAS) or "").split(",") if s]
    if str(SCHEMA_PATH) not in schemas:
        schemas.append(str(SCHEMA_PATH))
    raylet = {name: environ.get(name, value) for name, value in RAYLET_ENV.items()}
    return {RUNTIME_ENV_PLUGINS: json.dumps(plugins), RUNTIME_ENV_PLUGIN_SCHEMAS: ",".join(schemas), **raylet}


def init_ray(**ray_init_kwargs):
    """`ray.init(**ray_init_kwargs)` with the `mpi` runtime env registered in the Ray it starts."""
    import ray

    os.environ.update(registration_env())
    return ray.init(**ray_init_kwargs)
