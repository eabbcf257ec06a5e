"""Every Ray internal that raympi and flytekitplugins.raympi depend on, in one place.

They are why setup.cfg allows only the Ray releases they were checked on (TESTED_RAY): tests/test_ray_contract.py
checks each one against the installed Ray in seconds, and its failures name the internal; tests/test_ray_versions.py
runs it on every minor release of the range (the venvs `make test` builds). Run it first when trying another Ray.
No other module of either package imports a private Ray module or spells one of these names.

Importing this module imports no Ray (MPI peers import raympi and need none): Ray's private modules are imported
inside the functions below, or on first access to `RuntimeEnvPlugin` / `RuntimeEnvContext`.

 1. `FunctionActorManager.get_execution_info(job_id, function_descriptor)` (ray._private.function_manager):
    the worker looks up every task and actor method it runs through it; `function_descriptor.class_name` is
    empty for a task. raympi.rank0 replaces it (guard_calls) to run every call under the world's supervision.
 2. `FunctionExecutionInfo` (function, function_name, max_calls), a namedtuple: `_replace(function=...,
    max_calls=...)`; a task whose max_calls is 1 ends its worker after one call (a fresh MPI world per call),
    0 is no limit (an actor keeps its world). raympi.rank0, through guard_calls.
 3. The `__ray` prefix of the methods Ray adds to every actor class and calls itself (`__ray_ready__`,
    `__ray_terminate__`, `__ray_call__`): guard_calls leaves them unguarded.
 4. Ray's Python worker is `<py_executable> <ray>/_private/workers/default_worker.py <args>`, and runs as
    `__main__` from that path (runpy) in a process that is not the one the raylet started (rank 0 is a child of
    mpirun); it ends by returning or raising SystemExit. raympi.rank0 (run_default_worker); raympi.template imports
    its module (`ray._private.workers.default_worker`: only an argument parser at import) for rank 0 to fork from.
 5. `RAY_RAYLET_PID` in every worker's environment: rank 0's parent is mpirun, so rank 0 watches the raylet
    itself. raympi.rank0 (raylet_pid).
 6. `--node-ip-address=<ip>` among the worker's arguments: rank 0's node as Ray names it (what mpirun's --host
    names, where the channel listens). raympi.runner (worker_node_ip).
 7. The worker command (RuntimeEnvContext.exec_worker, run by setup_worker.py): the context's env_vars are
    exported, then `bash -c "exec <py_executable> <worker argv, each shell-quoted>"`: a py_executable is a shell
    command line. raympi.command (the launch, through the plugin or Ray's built-in `py_executable` field),
    raympi.plugin.
 8. The runtime env plugin API (ray._private.runtime_env): `RuntimeEnvPlugin` (name, priority, static
    validate(runtime_env_dict), async create(uri, runtime_env, context, logger), modify_context(uris,
    runtime_env, context, logger)); `RuntimeEnvContext.py_executable` and `.env_vars`; the built-in pip, uv,
    conda and py_executable plugins' priority below raympi's 90 (mpirun wraps the interpreter they chose);
    plugins loaded from `RAY_RUNTIME_ENV_PLUGINS` ([{"class": ...}]) in the raylet's environment, schemas from
    `RAY_RUNTIME_ENV_PLUGIN_SCHEMAS` (paths, keyed by their "title") where RuntimeEnv is built.
    raympi.plugin, raympi.registration.
 9. Ray settings read from the environment (ray_config_def.h, `RAY_<name>`): `RAY_worker_niceness`, read by each
    worker from its own environment (raympi.command.RANK_ENV: rank 0 at its peers' niceness; raympi.spread: the
    daemon launchers too); `RAY_worker_register_timeout_seconds` (default 60), read by the raylet
    (raympi.registration.RAYLET_ENV says why).
10. `ray.nodes()` entries' keys `NodeID` and `NodeManagerAddress` (the IP in the worker's --node-ip-address=),
    `Alive` and `Resources` (its total resources). raympi.spread (node_addresses: mpirun's hosts),
    flytekitplugins.raympi.launch (nodes_offering: a placement that waits says why).
11. `placement_group_table(group)["bundles_to_node_id"]`: {bundle index: node ID}. raympi.spread,
    flytekitplugins.raympi.launch (bundle_nodes).
12. `RAY_JOB_CONFIG_JSON_ENV_VAR`: the job supervisor gives a submitted job's entrypoint (pyflyte-execute under
    KubeRay) its job config as JSON, the runtime env under "runtime_env". flytekitplugins.raympi.launch
    (job_runtime_env: is there a working_dir already).
13. `get_all_accelerator_managers()` (ray._private.accelerators), each with
    `get_visible_accelerator_ids_env_var()`: rank 0 hands its CUDA_VISIBLE_DEVICES (...) to the peers.
    raympi.rank0 (visible_accelerator_env_vars).
"""

import importlib
import json
import os
import sys
from typing import TYPE_CHECKING, Callable, Dict, List, Mapping, Optional, Tuple

if TYPE_CHECKING:
    from ray._private.runtime_env.context import RuntimeEnvContext  # noqa: F401
    from ray._private.runtime_env.plugin import RuntimeEnvPlugin  # noqa: F401

# The oldest and newest minor Ray releases these internals were checked on, and the requirement that allows them
# (setup.cfg's, checked by tests/test_ray_contract.py).
TESTED_RAY = ((2, 52), (2, 60))
TESTED_REQUIREMENT = "ray[default]>={}.{},<{}.{}".format(*TESTED_RAY[0], TESTED_RAY[1][0], TESTED_RAY[1][1] + 1)

RAY_METHOD_PREFIX = "__ray"  # 3
DEFAULT_WORKER_MODULE = "ray._private.workers.default_worker"  # 4
RAYLET_PID_ENV = "RAY_RAYLET_PID"  # 5
NODE_IP_ARG = "--node-ip-address="  # 6
RUNTIME_ENV_PLUGINS = "RAY_RUNTIME_ENV_PLUGINS"  # 8
RUNTIME_ENV_PLUGIN_SCHEMAS = "RAY_RUNTIME_ENV_PLUGIN_SCHEMAS"  # 8
WORKER_NICENESS = "RAY_worker_niceness"  # 9
WORKER_REGISTER_TIMEOUT = "RAY_worker_register_timeout_seconds"  # 9
JOB_CONFIG_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # 12

# 8: imported on first access (`from raympi.ray_internals import RuntimeEnvPlugin`).
_LAZY = {
    "RuntimeEnvPlugin": "ray._private.runtime_env.plugin",
    "RuntimeEnvContext": "ray._private.runtime_env.context",
}


def require_tested_ray() -> None:
    """Raise, naming the tested range, when this Ray is outside it: a world on another Ray could fail anywhere, a
    rank 0 that never registers (a hang) among the ways."""
    import ray

    version = ray.__version__
    (oldest, newest), minor = TESTED_RAY, tuple(int(part) for part in version.split(".")[:2])
    if not oldest <= minor <= newest:
        raise RuntimeError(
            f"raympi is tested with Ray {'.'.join(map(str, oldest))} to {'.'.join(map(str, newest))} "
            f"({TESTED_REQUIREMENT}), and this is Ray {version}: install a Ray in that range (README, "
            "\"Supported Ray versions\")")


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def guard_calls(guard: Callable[[Callable, bool, str], Tuple[Callable, int]]) -> None:
    """Make the Ray worker of this process run every task and actor method it loads as `guard(function, is_task,
    name)` says: the function to run in its place, and after how many calls the worker exits (0: never). Ray's own
    actor methods are left alone. Call before run_default_worker. (1, 2, 3)"""
    from ray._private.function_manager import FunctionActorManager

    load = FunctionActorManager.get_execution_info

    def get_execution_info(manager, job_id, function_descriptor):
        info = load(manager, job_id, function_descriptor)
        if info.function_name.startswith(RAY_METHOD_PREFIX):
            return info
        function, max_calls = guard(info.function, not function_descriptor.class_name, info.function_name)
        return info._replace(function=function, max_calls=max_calls)

    FunctionActorManager.get_execution_info = get_execution_info


def run_default_worker(worker_argv: List[str]) -> None:
    """Run Ray's Python worker in this process, `worker_argv` as the raylet passed it (default_worker.py first).
    Returns, or raises SystemExit, when the worker ends. (4)"""
    import runpy

    sys.argv = list(worker_argv)
    runpy.run_path(worker_argv[0], run_name="__main__")


def raylet_pid(environ: Mapping[str, str] = os.environ) -> int:
    """The pid of the raylet that started this worker. (5)"""
    return int(environ[RAYLET_PID_ENV])


def worker_node_ip(worker_argv: List[str]) -> Optional[str]:
    """The node's IP as Ray passes it to its worker; None if it does not. (6)"""
    for arg in worker_argv:
        if arg.startswith(NODE_IP_ARG):
            return arg[len(NODE_IP_ARG):]
    return None


def node_addresses() -> Dict[str, str]:
    """{node ID: node IP} of the Ray cluster this process is connected to. (10)"""
    import ray

    return {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes()}


def nodes_offering(resource: str, amount: float) -> int:
    """How many live nodes of the Ray cluster this process is connected to have `amount` of `resource` in all. (10)"""
    import ray

    return sum(node["Alive"] and node["Resources"].get(resource, 0) >= amount for node in ray.nodes())


def bundle_nodes(group) -> Dict[int, str]:
    """{bundle index: node ID} of a ready placement group. (11)"""
    from ray.util.placement_group import placement_group_table

    return placement_group_table(group)["bundles_to_node_id"]


def job_runtime_env(environ: Mapping[str, str] = os.environ) -> dict:
    """The runtime env a submitted Ray job gave this driver (its entrypoint); {} if none. (12)"""
    return json.loads(environ.get(JOB_CONFIG_ENV) or "{}").get("runtime_env") or {}


def visible_accelerator_env_vars() -> List[str]:
    """The variables through which Ray tells a worker its accelerators (CUDA_VISIBLE_DEVICES, ...). (13)"""
    from ray._private.accelerators import get_all_accelerator_managers

    return [name for name in (m.get_visible_accelerator_ids_env_var() for m in get_all_accelerator_managers()) if name]
