"""Registering the `mpi` runtime env with Ray, and a local Ray that has it."""

import json
import os

import ray

from .config import SCHEMA_PATH

PLUGIN_CLASS = "raympi.plugin.MPIPlugin"
# What a Ray node's environment needs for the `mpi` runtime env (e.g. in a KubeRay pod).
PLUGIN_ENV = {"RAY_RUNTIME_ENV_PLUGINS": json.dumps([{"class": PLUGIN_CLASS}])}


def registration_env(environ=os.environ) -> dict:
    """Environment variables that make a Ray started with them know the `mpi` runtime env
    (merged with plugins and schemas already registered in `environ`)."""
    plugins = json.loads(environ.get("RAY_RUNTIME_ENV_PLUGINS") or "[]")
    if all(p.get("class") != PLUGIN_CLASS for p in plugins):
        plugins.append({"class": PLUGIN_CLASS})
    schemas = [s for s in (environ.get("RAY_RUNTIME_ENV_PLUGIN_SCHEMAS") or "").split(",") if s]
    if str(SCHEMA_PATH) not in schemas:
        schemas.append(str(SCHEMA_PATH))
    return {"RAY_RUNTIME_ENV_PLUGINS": json.dumps(plugins), "RAY_RUNTIME_ENV_PLUGIN_SCHEMAS": ",".join(schemas)}


def init_ray(**ray_init_kwargs):
    """`ray.init(**ray_init_kwargs)` with the `mpi` runtime env registered in the Ray it starts."""
    os.environ.update(registration_env())
    return ray.init(**ray_init_kwargs)
