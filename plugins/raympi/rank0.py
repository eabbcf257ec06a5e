"""Rank 0 is a Ray worker. Every task or actor method it runs is supervised together with the
peers: the body runs on one dedicated thread while the calling thread watches the whole world,
so a failure on any rank ends the call at once, even while the body is stuck in an MPI call."""

import os
import runpy
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from .errors import MPIRankError
from .supervisor import Supervisor

if TYPE_CHECKING:
    from ray._private.function_manager import FunctionExecutionInfo

# True in the process that is rank 0 of an MPI world (see mpi_init).
ACTIVE = False


class WorldGuard:
    def __init__(self, supervisor: Supervisor):
        self._supervisor = supervisor
        self._body = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raympi-rank0")
        self._started = False

    def execution_info(self, info: "FunctionExecutionInfo", is_task: bool) -> "FunctionExecutionInfo":
        """Guard `info`'s function; a task also ends its worker after one call (a fresh world each)."""
        if info.function_name.startswith("__ray"):
            return info
        return info._replace(function=self._guarded(info.function, is_task), max_calls=1 if is_task else 0)

    def _guarded(self, function, is_task: bool):
        def run(*args, **kwargs):
            supervisor = self._supervisor
            if supervisor.failure:
                raise supervisor.failure
            if not self._started:
                self._started = True
                supervisor.start_peers(_accelerator_env())
            body = self._body.submit(function, *args, **kwargs)
            try:
                supervisor.wait(body, for_peers=False)
                error = body.exception()
                if error is not None:
                    supervisor.fail(_rank0_error(f"raised {type(error).__name__}: {error}"))
                    raise error
                if is_task:
                    supervisor.wait(body, for_peers=True)
                return body.result()
            except BaseException as error:
                if not supervisor.failure:
                    supervisor.fail(_rank0_error(f"was interrupted: {type(error).__name__}"))
                raise

        run.__name__ = getattr(function, "__name__", "run")
        return run


def _rank0_error(reason: str) -> MPIRankError:
    return MPIRankError(0, socket.gethostname(), os.getpid(), reason)


def _accelerator_env() -> dict:
    """Rank 0's accelerator visibility (CUDA_VISIBLE_DEVICES, ...), handed to every peer."""
    from ray._private.accelerators import get_all_accelerator_managers

    names = (m.get_visible_accelerator_ids_env_var() for m in get_all_accelerator_managers())
    return {name: os.environ[name] for name in names if name and name in os.environ}


def _exit_when_gone(pid: int) -> None:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        time.sleep(1)


def run_ray_worker(supervisor: Supervisor, ray_worker_argv: list) -> None:
    """Run Ray's default worker (`ray_worker_argv[0]`) in this process, with every call guarded."""
    from ray._private.function_manager import FunctionActorManager

    global ACTIVE
    ACTIVE = True
    guard = WorldGuard(supervisor)
    load = FunctionActorManager.get_execution_info

    def get_execution_info(manager, job_id, function_descriptor):
        info = load(manager, job_id, function_descriptor)
        return guard.execution_info(info, is_task=not function_descriptor.class_name)

    FunctionActorManager.get_execution_info = get_execution_info
    # Ray's own orphan check looks at the parent pid, which here is mpirun's: watch the raylet instead.
    threading.Thread(target=_exit_when_gone, args=(int(os.environ["RAY_RAYLET_PID"]),),
                     name="raympi-raylet-watch", daemon=True).start()
    sys.argv = list(ray_worker_argv)
    try:
        runpy.run_path(ray_worker_argv[0], run_name="__main__")
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    except BaseException:  # noqa: B036 -- whatever ended the worker, the world ends with it
        traceback.print_exc()
        code = 1
    supervisor.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Not MPI_Finalize (mpi4py's exit hook): its fence waits forever for peers, which leave with
    # os._exit when the channel closes. Ending here, as they do, ends the world.
    os._exit(code)
