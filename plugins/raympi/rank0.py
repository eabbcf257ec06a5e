"""Rank 0 is a Ray worker. Every task or actor method it runs is supervised together with the
peers: the body runs on one dedicated thread while the calling thread watches the whole world,
so a failure on any rank ends the call at once, even while the body is stuck in an MPI call."""

import contextlib
import os
import socket
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from . import ray_internals, world
from .errors import MPIRankError
from .supervisor import Supervisor

# An actor method of this name runs as a task does: its call returns once every peer has finished its entry too (the
# world has done its work; end the actor after it).
WHOLE_WORLD_METHOD = "run_whole_world"


class WorldGuard:
    def __init__(self, supervisor: Supervisor):
        self._supervisor = supervisor
        self._body = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raympi-rank0")
        self._started = False

    def guard(self, function, is_task: bool, name: str):
        """`function` guarded, and the calls after which the worker exits: a task's after one (a fresh world each)."""
        return self._guarded(function, is_task, is_task or name == WHOLE_WORLD_METHOD), 1 if is_task else 0

    def _guarded(self, function, is_task: bool, whole_world: bool):
        def run(*args, **kwargs):
            supervisor = self._supervisor
            if supervisor.failure:
                raise supervisor.failure
            if not self._started:
                self._started = True
                supervisor.start_peers(_accelerator_env(), ends_with_call=is_task)
                world.mark("joined")
            body = self._body.submit(function, *args, **kwargs)
            body.add_done_callback(lambda _: world.mark("ended"))
            try:
                supervisor.wait(body, for_peers=False)
                error = body.exception()
                if error is not None:
                    supervisor.fail(_rank0_error(f"raised {type(error).__name__}: {error}"))
                    raise error
                if whole_world:
                    supervisor.wait(body, for_peers=True)
                return body.result()
            except BaseException as error:
                if not supervisor.failure:
                    supervisor.fail(_rank0_error(f"was interrupted: {type(error).__name__}"))
                if supervisor.keeps_output:  # someone looks at the world: the caller gets it with the error
                    with contextlib.suppress(AttributeError):  # an exception type that takes no attributes
                        error.mpi_world = world.view(wait_for_peers=False, timeout=0)
                raise

        run.__name__ = getattr(function, "__name__", "run")
        return run


def abort_handle(supervisor: Supervisor):
    """What rank 0's MPI_Abort does (see raympi.abort): the call fails naming it, and the calling thread waits for the
    world's end, as MPI_Abort never returns."""
    def handle(reason: str, trace: str, _real_abort) -> None:
        supervisor.fail(_rank0_error(reason, trace))
        threading.Event().wait()

    return handle


def _rank0_error(reason: str, trace: str = "") -> MPIRankError:
    return MPIRankError(0, socket.gethostname(), os.getpid(), reason, trace)


def _accelerator_env() -> dict:
    """Rank 0's accelerator visibility (CUDA_VISIBLE_DEVICES, ...), handed to the peers on its node."""
    names = ray_internals.visible_accelerator_env_vars()
    return {name: os.environ[name] for name in names if name in os.environ}


def _exit_when_gone(pid: int) -> None:
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            os._exit(1)
        time.sleep(1)


def run_ray_worker(supervisor: Supervisor, ray_worker_argv: list) -> None:
    """Run Ray's default worker (`ray_worker_argv[0]`) in this process, with every call guarded."""
    ray_internals.guard_calls(WorldGuard(supervisor).guard)
    # Ray's own orphan check looks at the parent pid, which here is mpirun's: watch the raylet instead.
    threading.Thread(target=_exit_when_gone, args=(ray_internals.raylet_pid(),),
                     name="raympi-raylet-watch", daemon=True).start()
    try:
        ray_internals.run_default_worker(ray_worker_argv)
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
