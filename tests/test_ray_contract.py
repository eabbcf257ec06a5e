"""The Ray internals raympi depends on (raympi/ray_internals.py lists them, numbered), each checked against the
installed Ray. A failure names the internal that changed; nothing here waits on an MPI world, so a change fails
within seconds instead of hanging the whole-system tests. Run this first when trying another Ray:

    .venv/bin/python -m pytest tests/test_ray_contract.py -q
"""

import configparser
import inspect
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray

import raympi
from raympi import ray_internals
from raympi.plugin import MPIPlugin

RAY_DIR = Path(ray.__file__).parent
REPO = Path(__file__).resolve().parent.parent
# How long a Ray call may take here (a worker start on a loaded 2-core machine) before the contract counts as broken.
CALL_TIMEOUT_S = 90.0

INTERNALS = {
    1: "FunctionActorManager.get_execution_info",
    2: "FunctionExecutionInfo._replace(function=..., max_calls=...)",
    3: "the __ray prefix of Ray's own actor methods",
    4: "default_worker.py run with runpy, in a child of the process the raylet started",
    5: "RAY_RAYLET_PID in a worker's environment",
    6: "the --node-ip-address= worker argument",
    7: "the worker command: env_vars exported, then `exec <py_executable> <worker argv>` in a shell",
    8: "the RuntimeEnvPlugin API (RuntimeEnvPlugin, RuntimeEnvContext, RAY_RUNTIME_ENV_PLUGINS, schemas)",
    9: "Ray settings from the environment (RAY_worker_niceness, RAY_worker_register_timeout_seconds)",
    10: "ray.nodes() keys NodeID, NodeManagerAddress",
    11: "placement_group_table(group)['bundles_to_node_id']",
    12: "RAY_JOB_CONFIG_JSON_ENV_VAR",
    13: "get_all_accelerator_managers().get_visible_accelerator_ids_env_var()",
}


def broken(*numbers: int) -> str:
    """The start of a failure message: which internals it concerns."""
    names = "; ".join(f"#{n} {INTERNALS[n]}" for n in numbers)
    return f"Ray {ray.__version__} broke raympi's contract with Ray internal {names} (raympi/ray_internals.py): "


def parameters(function) -> list:
    return list(inspect.signature(function).parameters)


# ---------------------------------------------------------------------------------------------------------------
# Checks of the installed package alone: no Ray running.


def test_setup_cfg_allows_the_rays_this_contract_was_checked_on_and_this_one_is_among_them():
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    requirements = config["options"]["install_requires"].split()
    assert ray_internals.TESTED_REQUIREMENT in requirements, (
        f"setup.cfg asks for {[r for r in requirements if r.startswith('ray')]}, raympi.ray_internals.TESTED_RAY is "
        f"{ray_internals.TESTED_RAY}: change both together, with the venvs of tests/test_ray_versions.py")
    ray_internals.require_tested_ray()


def test_1_get_execution_info_is_a_method_the_worker_calls_by_name():
    from ray._private.function_manager import FunctionActorManager

    assert parameters(FunctionActorManager.get_execution_info) == ["self", "job_id", "function_descriptor"], \
        broken(1) + f"its parameters are {parameters(FunctionActorManager.get_execution_info)}"
    # The worker's task loop (Cython, ray/_raylet.so) looks it up as an attribute at call time, so that the
    # replacement installed before default_worker.py runs is the one used.
    assert b"get_execution_info" in (RAY_DIR / "_raylet.so").read_bytes(), \
        broken(1) + "ray/_raylet.so no longer names it: the worker may load functions another way"


def test_2_function_execution_info_fields_and_replace():
    from ray._private.function_manager import FunctionExecutionInfo

    assert FunctionExecutionInfo._fields == ("function", "function_name", "max_calls"), \
        broken(2) + f"its fields are {FunctionExecutionInfo._fields}"
    info = FunctionExecutionInfo(function=len, function_name="f", max_calls=0)
    replaced = info._replace(function=abs, max_calls=1)
    assert (type(replaced), replaced.function, replaced.function_name, replaced.max_calls) == \
        (FunctionExecutionInfo, abs, "f", 1), broken(2) + f"_replace gave {replaced!r}"
    # What the worker does with max_calls (a task's worker exits after that many calls) is checked on a real
    # worker in test_1_to_7_a_task_in_a_worker_started_as_rank_0_is.


def test_3_the_methods_ray_adds_to_an_actor_class_start_with_the_prefix():
    class Plain:
        def work(self):
            return 1

    modified = ray.remote(Plain).__ray_metadata__.modified_class
    added = {name for name, value in vars(modified).items() if callable(value) and name not in vars(Plain)}
    added.discard("__init__")  # added when the class has none; it is the actor's creation, guarded
    assert {"__ray_ready__", "__ray_terminate__"} <= added, broken(3) + f"Ray adds {sorted(added)}"
    assert all(name.startswith(ray_internals.RAY_METHOD_PREFIX) for name in added), \
        broken(3) + f"Ray adds {sorted(added)}: the ones without the prefix would be guarded as user methods"


def test_4_default_worker_py_is_a_main_script():
    worker = RAY_DIR / "_private" / "workers" / "default_worker.py"
    assert worker.is_file(), broken(4) + f"{worker} is missing"
    assert 'if __name__ == "__main__":' in worker.read_text(), \
        broken(4) + f"{worker} has no __main__ block: runpy.run_path(..., run_name='__main__') would not run it"
    from ray._private import services

    source = inspect.getsource(services.start_raylet)
    assert "worker_path" in source and 'f"--node-ip-address={node_ip_address}"' in source, \
        broken(4, 6) + "services.start_raylet no longer builds `<python> setup_worker.py <worker_path> " \
                       "--node-ip-address=<ip> ...`"


def test_5_raylet_pid_is_a_ray_internal_flag():
    from ray._private import ray_constants

    assert ray_internals.RAYLET_PID_ENV in ray_constants.RAY_INTERNAL_FLAGS, \
        broken(5) + f"ray_constants.RAY_INTERNAL_FLAGS is {ray_constants.RAY_INTERNAL_FLAGS}"


def test_6_node_ip_is_parsed_from_the_worker_argv():
    argv = ["/ray/_private/workers/default_worker.py", "--node-manager-port=1", "--node-ip-address=10.1.2.3"]
    assert ray_internals.worker_node_ip(argv) == "10.1.2.3"
    assert ray_internals.worker_node_ip(argv[:2]) is None


def test_7_exec_worker_runs_py_executable_in_a_shell_with_the_env_vars(tmp_path):
    """setup_worker.py (the raylet's worker command) deserializes the context and calls exec_worker."""
    from ray._private.runtime_env.context import RuntimeEnvContext

    shown = tmp_path / "argv.json"
    report = f"import json, os, sys; json.dump([sys.argv[1:], os.environ.get('RAYMPI_X')], open({str(shown)!r}, 'w'))"
    context = RuntimeEnvContext(py_executable=shlex.join([sys.executable, "-c", report]), env_vars={"RAYMPI_X": "y z"})
    setup_worker = RAY_DIR / "_private" / "workers" / "setup_worker.py"
    worker_argv = [str(RAY_DIR / "_private" / "workers" / "default_worker.py"), "--node-ip-address=10.1.2.3", "a b"]
    run = subprocess.run([sys.executable, str(setup_worker), f"--serialized-runtime-env-context={context.serialize()}",
                          "--language=PYTHON", *worker_argv], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and shown.exists(), \
        broken(7) + f"setup_worker.py did not run the py_executable command:\n{run.stderr[-3000:]}"
    assert json.loads(shown.read_text()) == [worker_argv, "y z"], \
        broken(7) + f"the py_executable command got {shown.read_text()}, not the worker argv {worker_argv} " \
                    "and env_vars"


def test_8_runtime_env_plugin_api():
    from ray._private.runtime_env import constants
    from ray._private.runtime_env.context import RuntimeEnvContext
    from ray._private.runtime_env.plugin import RuntimeEnvPlugin

    assert (ray_internals.RuntimeEnvPlugin, ray_internals.RuntimeEnvContext) == (RuntimeEnvPlugin, RuntimeEnvContext)
    assert isinstance(inspect.getattr_static(RuntimeEnvPlugin, "validate"), staticmethod), \
        broken(8) + "RuntimeEnvPlugin.validate is no longer a staticmethod"
    expected = {
        "validate": ["runtime_env_dict"],
        "create": ["self", "uri", "runtime_env", "context", "logger"],
        "modify_context": ["self", "uris", "runtime_env", "context", "logger"],
    }
    for name, names in expected.items():
        assert parameters(getattr(RuntimeEnvPlugin, name)) == names, \
            broken(8) + f"RuntimeEnvPlugin.{name}{inspect.signature(getattr(RuntimeEnvPlugin, name))}, expected {names}"
        assert parameters(getattr(MPIPlugin, name)) == names, f"raympi's MPIPlugin.{name} no longer matches Ray's"
    assert inspect.iscoroutinefunction(RuntimeEnvPlugin.create), broken(8) + "RuntimeEnvPlugin.create is not async"
    assert not getattr(RuntimeEnvPlugin, "__abstractmethods__", ()), \
        broken(8) + f"RuntimeEnvPlugin has abstract methods {sorted(RuntimeEnvPlugin.__abstractmethods__)}"
    assert constants.RAY_RUNTIME_ENV_PLUGIN_MIN_PRIORITY <= MPIPlugin.priority <= \
        constants.RAY_RUNTIME_ENV_PLUGIN_MAX_PRIORITY, broken(8) + "MPIPlugin.priority is out of Ray's range"
    assert (constants.RAY_RUNTIME_ENV_PLUGINS_ENV_VAR, constants.RAY_RUNTIME_ENV_PLUGIN_SCHEMAS_ENV_VAR,
            constants.RAY_RUNTIME_ENV_CLASS_FIELD_NAME) == \
        (ray_internals.RUNTIME_ENV_PLUGINS, ray_internals.RUNTIME_ENV_PLUGIN_SCHEMAS, "class"), \
        broken(8) + "the variables that register plugins and schemas were renamed"

    context = RuntimeEnvContext.deserialize(RuntimeEnvContext().serialize())
    assert context.py_executable == sys.executable and context.env_vars == {}, \
        broken(8) + f"RuntimeEnvContext has {vars(context)}"


def test_8_built_in_plugins_that_choose_the_interpreter_run_before_raympis():
    from ray._private.runtime_env.conda import CondaPlugin
    from ray._private.runtime_env.pip import PipPlugin
    from ray._private.runtime_env.py_executable import PyExecutablePlugin
    from ray._private.runtime_env.uv import UvPlugin

    for plugin in (PipPlugin, UvPlugin, CondaPlugin, PyExecutablePlugin):
        assert plugin.priority < MPIPlugin.priority, \
            broken(8) + f"{plugin.__name__}.priority is {plugin.priority}: mpirun would not wrap its interpreter"


def test_8_the_agent_loads_raympis_plugin_from_the_registration_variable(monkeypatch):
    from ray._private.runtime_env.plugin import RuntimeEnvPluginManager

    registration = raympi.registration_env({})
    monkeypatch.setenv(ray_internals.RUNTIME_ENV_PLUGINS, registration[ray_internals.RUNTIME_ENV_PLUGINS])
    plugins = RuntimeEnvPluginManager().plugins
    assert "mpi" in plugins and isinstance(plugins["mpi"].class_instance, MPIPlugin), \
        broken(8) + f"RuntimeEnvPluginManager loaded {plugins}"
    assert plugins["mpi"].priority == MPIPlugin.priority


def fresh_python(code: str, env: dict) -> subprocess.CompletedProcess:
    """`code` in a new interpreter (Ray reads these variables once per process), its stdout's last line as JSON."""
    run = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def test_8_ray_validates_the_mpi_field_with_the_registered_schema():
    """Ray 2.60 checks a plugin's schema when a field is set on a RuntimeEnv (`env["mpi"] = ...`), not when a
    RuntimeEnv or a task's options are built from a dict: MPIPlugin.validate, in the agent, is the check that counts."""
    env = {**os.environ, **raympi.registration_env({})}
    code = """if True:
        import json, jsonschema
        from ray.runtime_env import RuntimeEnv
        RuntimeEnv()["mpi"] = {"worker_entry": "module.function", "args": ["-n", "2"]}
        try:
            RuntimeEnv()["mpi"] = {"worker_entry": "module.function", "args": 2}
            print(json.dumps("accepted"))
        except jsonschema.ValidationError as error:
            print(json.dumps(error.message))
    """
    assert "is not of type 'array'" in fresh_python(code, env), \
        broken(8) + f"RuntimeEnv(mpi=...) no longer checks {ray_internals.RUNTIME_ENV_PLUGIN_SCHEMAS}'s schema"


def test_9_settings_are_ray_config_entries():
    """ray_config_def.h's RAY_CONFIG(type, name, default) reads "RAY_" #name from the environment: the literal is in
    the binaries that read it (the raylet; ray/_raylet.so, the worker's core)."""
    from ray._private import ray_constants, services

    raylet, core = Path(services.RAYLET_EXECUTABLE).read_bytes(), (RAY_DIR / "_raylet.so").read_bytes()
    for name, binary, where in ((ray_internals.WORKER_NICENESS, core, "ray/_raylet.so (each worker)"),
                                (ray_internals.WORKER_REGISTER_TIMEOUT, raylet, services.RAYLET_EXECUTABLE)):
        assert name.encode() + b"\0" in binary, broken(9) + f"{name} is not read by {where}"
    assert ray_constants.RAY_WORKER_NICENESS == ray_internals.WORKER_NICENESS, \
        broken(9) + f"ray_constants.RAY_WORKER_NICENESS is {ray_constants.RAY_WORKER_NICENESS}"


def test_9_worker_register_timeout_is_read_from_the_environment():
    code = "import json, ray._raylet; print(json.dumps(ray._raylet.Config.worker_register_timeout_seconds()))"
    env = {k: v for k, v in os.environ.items() if k != ray_internals.WORKER_REGISTER_TIMEOUT}
    assert fresh_python(code, env) == 60, \
        broken(9) + "the default of worker_register_timeout_seconds is no longer 60 s (raympi.registration explains " \
                    "why it sets 300)"
    assert fresh_python(code, {**env, ray_internals.WORKER_REGISTER_TIMEOUT: "300"}) == 300, \
        broken(9) + f"{ray_internals.WORKER_REGISTER_TIMEOUT} in the environment is ignored"


def test_12_job_config_variable_carries_the_runtime_env():
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR
    from ray.dashboard.modules.job.job_supervisor import JobSupervisor

    assert RAY_JOB_CONFIG_JSON_ENV_VAR == ray_internals.JOB_CONFIG_ENV, \
        broken(12) + f"the variable is now {RAY_JOB_CONFIG_JSON_ENV_VAR}"
    source = inspect.getsource(JobSupervisor._get_driver_env_vars)
    assert "RAY_JOB_CONFIG_JSON_ENV_VAR" in source and '"runtime_env"' in source, \
        broken(12) + "the job supervisor no longer hands the entrypoint its runtime env under 'runtime_env'"
    config = json.dumps({"runtime_env": {"working_dir": "/code"}, "metadata": {}})
    assert ray_internals.job_runtime_env({ray_internals.JOB_CONFIG_ENV: config}) == {"working_dir": "/code"}
    assert ray_internals.job_runtime_env({}) == {}


def test_13_accelerator_managers_name_their_variables():
    names = ray_internals.visible_accelerator_env_vars()
    assert "CUDA_VISIBLE_DEVICES" in names, broken(13) + f"the managers name {names}"


# ---------------------------------------------------------------------------------------------------------------
# Checks on a real local Ray (the session's `local_ray`): a few worker starts, no MPI.

# A Ray worker started as rank 0 is: a child of a shell (rank 0 is a child of mpirun, not the process the raylet
# started), with its calls guarded and its worker run by raympi.ray_internals as raympi.rank0 does.
HOOKED_WORKER = """
import json, os, sys, traceback
from raympi import ray_internals

def note(**entry):
    with open(os.environ["RAYMPI_CONTRACT_RECORD"], "a") as record:
        record.write(json.dumps({"pid": os.getpid(), **entry}) + "\\n")

argv = sys.argv[1:]
note(ppid=os.getppid(), argv=argv, raylet_pid=os.environ.get("RAY_RAYLET_PID"))

def guard(function, is_task, name):
    note(guarded=is_task)
    def guarded(*args, **kwargs):
        return ["guarded", function(*args, **kwargs)]
    return guarded, 1 if is_task else 0

try:
    ray_internals.guard_calls(guard)
    ray_internals.run_default_worker(argv)
    note(exit="returned")
except SystemExit as stop:
    note(exit=stop.code)
except BaseException:
    note(error=traceback.format_exc())
os._exit(0)
"""


def hooked_env(record: Path) -> dict:
    """A runtime env whose worker starts as HOOKED_WORKER, through Ray's built-in py_executable field."""
    command = ["/bin/sh", "-c", '"$@"; exit $?', "sh", sys.executable, "-c", HOOKED_WORKER]
    return {"py_executable": shlex.join(command), "env_vars": {"RAYMPI_CONTRACT_RECORD": str(record)}}


def notes(record: Path, pid=None) -> list:
    """What the hooked workers noted (Ray may start more than one for a runtime env); with `pid`, that one's."""
    entries = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
    return [n for n in entries if pid in (None, n["pid"])]


def call(ref, record: Path, *numbers: int):
    """ray.get(ref), failing at once, naming the internals, when the hooked worker fails, and after CALL_TIMEOUT_S
    when Ray never gets an answer."""
    deadline = time.monotonic() + CALL_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _ = ray.wait([ref], timeout=1)
        if ready:
            return ray.get(ref)
        errors = [n["error"] for n in notes(record) if "error" in n]
        assert not errors, broken(*numbers) + f"the worker failed:\n{errors[0]}"
    pytest.fail(broken(*numbers) + f"no answer within {CALL_TIMEOUT_S:.0f} s; the worker noted {notes(record)}")


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


@ray.remote(num_cpus=0, max_retries=0)
def probe() -> dict:
    return {"pid": os.getpid(), "nice": os.nice(0), "raylet": int(os.environ[ray_internals.RAYLET_PID_ENV])}


@pytest.mark.usefixtures("local_ray")
def test_1_to_7_a_task_in_a_worker_started_as_rank_0_is(tmp_path):
    record = tmp_path / "record.jsonl"
    result = call(probe.options(runtime_env=hooked_env(record)).remote(), record, 1, 2, 4, 7)
    assert isinstance(result, list) and result[0] == "guarded", \
        broken(1) + f"the task ran unguarded ({result!r}): the worker no longer loads it through get_execution_info"
    task = result[1]
    started = next((n for n in notes(record, task["pid"]) if "argv" in n), None)
    assert started, broken(4) + f"the task ran in {task['pid']}, no hooked worker: {notes(record)}"
    assert started["ppid"] != int(started["raylet_pid"] or 0) and _comm(started["ppid"]) == "sh", \
        "the check is void: the worker was not a child of the shell"
    assert started["argv"][0].endswith(os.path.join("_private", "workers", "default_worker.py")), \
        broken(4, 7) + f"the worker argv is {started['argv']}"
    assert [n["guarded"] for n in notes(record, task["pid"]) if "guarded" in n] == [True], \
        broken(1) + "a task's function descriptor has a class name"

    assert started["raylet_pid"] is not None, broken(5) + "the worker's environment has no RAY_RAYLET_PID"
    assert _comm(int(started["raylet_pid"])) == "raylet", \
        broken(5) + f"RAY_RAYLET_PID={started['raylet_pid']} is {_comm(int(started['raylet_pid']))!r}, not the raylet"

    node_ip = ray_internals.worker_node_ip(started["argv"])
    assert node_ip is not None, broken(6) + f"the worker argv is {started['argv']}"
    assert node_ip in ray_internals.node_addresses().values(), \
        broken(6, 10) + f"--node-ip-address={node_ip} is no node's NodeManagerAddress: {ray.nodes()}"

    # max_calls=1: the worker ends after this one call (a fresh MPI world per task).
    deadline = time.monotonic() + 30
    while not any("exit" in n for n in notes(record, task["pid"])) and time.monotonic() < deadline:
        time.sleep(0.2)
    exits = [n["exit"] for n in notes(record, task["pid"]) if "exit" in n]
    assert exits == [0], broken(2) + f"after its one call the worker did not end with SystemExit(0): {exits}"


@pytest.mark.usefixtures("local_ray")
def test_1_2_3_an_actor_in_a_worker_started_as_rank_0_is(tmp_path):
    @ray.remote(num_cpus=0, max_restarts=0)
    class Probe:
        def ping(self):
            return os.getpid()

    record = tmp_path / "record.jsonl"
    actor = Probe.options(runtime_env=hooked_env(record)).remote()
    try:
        first = call(actor.ping.remote(), record, 1, 4, 7)
        assert call(actor.__ray_ready__.remote(), record, 3) is True, \
            broken(3) + "Ray's own __ray_ready__ was guarded: its name lost the prefix"
        second = call(actor.ping.remote(), record, 2)
    finally:
        ray.kill(actor)
    assert first[0] == "guarded" and second == first, \
        broken(1, 2) + f"an actor's calls gave {first!r}, {second!r}: max_calls=0 should keep its worker"
    assert set(n["guarded"] for n in notes(record, first[1]) if "guarded" in n) == {False}, \
        broken(1) + "an actor method's function descriptor has no class name"


@pytest.mark.usefixtures("local_ray")
def test_9_worker_niceness_in_a_workers_environment_stops_its_renice():
    default = call(probe.remote(), Path("/nonexistent"), 9)
    raylet, reniced = os.getpriority(os.PRIO_PROCESS, default["raylet"]), default["nice"]
    kept = call(probe.options(runtime_env={"env_vars": {ray_internals.WORKER_NICENESS: "0"}}).remote(),
                Path("/nonexistent"), 9)["nice"]
    if raylet < 19:
        assert reniced > raylet, "the check is void: Ray no longer renices its workers"
    assert kept == raylet, broken(9) + f"a worker with {ray_internals.WORKER_NICENESS}=0 runs at nice {kept}, the " \
                                       f"raylet at {raylet}"


@pytest.mark.usefixtures("local_ray")
def test_10_11_nodes_and_placement_group_bundles():
    for node in ray.nodes():
        assert {"NodeID", "NodeManagerAddress", "Alive", "Resources"} <= set(node), \
            broken(10) + f"a node has {sorted(node)}"
    addresses = ray_internals.node_addresses()
    assert ray.util.get_node_ip_address() in addresses.values(), broken(10) + f"ray.nodes() gave {addresses}"
    cpus = ray.cluster_resources()["CPU"]  # local_ray's one node
    assert (ray_internals.nodes_offering("CPU", cpus), ray_internals.nodes_offering("CPU", cpus + 1)) == (1, 0), \
        broken(10) + f"ray.nodes() gave {ray.nodes()}"

    from ray.util.placement_group import placement_group, remove_placement_group

    group = placement_group([{"CPU": 1}])
    try:
        ray.get(group.ready(), timeout=CALL_TIMEOUT_S)
        bundles = ray_internals.bundle_nodes(group)
    finally:
        remove_placement_group(group)
    assert list(bundles) == [0] and bundles[0] in addresses, \
        broken(11) + f"bundles_to_node_id is {bundles}, the nodes {list(addresses)}"


@pytest.mark.usefixtures("local_ray")
def test_13_a_gpu_task_sees_its_gpu_in_a_variable_the_managers_name():
    @ray.remote(num_gpus=1, num_cpus=0, max_retries=0)
    def visible():
        return {name: os.environ[name] for name in ray_internals.visible_accelerator_env_vars() if name in os.environ}

    seen = call(visible.remote(), Path("/nonexistent"), 13)
    # Ray before 2.56 also sets the other managers' variables, empty (RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO: on by
    # default until 2.56, `ray/_private/utils.py` set_visible_accelerator_ids): the peers are handed those as well,
    # and see what rank 0 sees.
    assert seen.pop("CUDA_VISIBLE_DEVICES", None) == "0" and set(seen.values()) <= {""}, \
        broken(13) + f"a task given a GPU does not find it in the variables the accelerator managers name: {seen}"
