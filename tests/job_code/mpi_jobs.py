"""Tasks run through the Ray-job entrypoint path (`pyflyte-execute` as the Ray job's driver), the way
the Flyte backend and KubeRay run them. This folder is the job's working_dir, as a task image's code is."""

import os
import threading
from pathlib import Path
from typing import List, Tuple

import psutil
import ray
from flytekit import Resources, current_context, task
from flytekit.types.file import FlyteFile
from flytekitplugins.raympi import RayMPIJob, Worker
from raympi.forked import launcher_pid


def node_ips() -> str:
    """This node's IPv4 addresses (Ray nodes in network namespaces each have their own)."""
    return ",".join(sorted(a.address for addrs in psutil.net_if_addrs().values() for a in addrs
                           if a.family.name == "AF_INET" and not a.address.startswith("127.")))


def report_world(x: int, fail_on_rank: int) -> Tuple[List[str], FlyteFile]:
    """Each rank reports "rank/size ips pid total niceness OMP_NUM_THREADS JOB_MARK start parent" (start: forked from
    a template, or fresh; parent: its parent's pid, the template's if forked); rank 0 also writes the report to a file
    it returns."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    print(f"rank {comm.rank} of {comm.size} reporting", flush=True)
    if comm.rank == fail_on_rank:
        raise RuntimeError(f"rank {comm.rank} failed on purpose")
    total = comm.allreduce((comm.rank + 1) * x)
    nice = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())  # this thread's (Linux)
    rows = comm.gather(f"{comm.rank}/{comm.size} {node_ips()} {os.getpid()} {total} {nice} "
                       f"{os.environ.get('OMP_NUM_THREADS')} {os.environ.get('JOB_MARK', '-')} "
                       f"{'forked' if launcher_pid() != os.getppid() else 'fresh'} {os.getppid()}", root=0)
    report = Path(current_context().working_directory) / "report.txt"
    if comm.rank == 0:
        report.write_text("\n".join(rows) + "\n")
    return rows, FlyteFile(str(report))


@task(task_config=RayMPIJob(worker=Worker(replicas=1), slots=2))
def one_node(x: int, fail_on_rank: int) -> (List[str], FlyteFile):
    return report_world(x, fail_on_rank)


@task(task_config=RayMPIJob(worker=Worker(replicas=1), slots=2))
def sum_of_ranks(x: int) -> str:
    """What a map task's element runs: "x the ranks' sum of x + rank, rank 0's pid"."""
    from mpi4py import MPI

    return f"{x} {MPI.COMM_WORLD.allreduce(x + MPI.COMM_WORLD.rank)} {os.getpid()}"


@task(task_config=RayMPIJob(worker=Worker(replicas=2), slots=2, runtime_env={"env_vars": {"JOB_MARK": "two_nodes"}}))
def two_nodes(x: int, fail_on_rank: int) -> (List[str], FlyteFile):
    return report_world(x, fail_on_rank)


# The namespace cluster's nodes share one kernel and /dev/shm: UCX (MPICH's transport) takes them for one host and
# tries shared memory between them, which fails across their PID namespaces (MPI_Init: "Endpoint timeout"). Nodes
# of a real cluster are hosts of their own.
NODES_OF_THEIR_OWN = {"UCX_TLS": "tcp,self"}


def two_nodes_on(flavour: str) -> RayMPIJob:
    """two_nodes' world on another MPI flavour: the cluster's Ray runs in the suite's venv (Open MPI), the ranks in
    the flavour's, built beside it by `make test`."""
    python = Path(__file__).resolve().parents[2] / f".venv-{flavour}" / "bin" / "python"
    return RayMPIJob(worker=Worker(replicas=2), slots=2, flavour=flavour,
                     runtime_env={"env_vars": {"JOB_MARK": "two_nodes", **NODES_OF_THEIR_OWN},
                                  "py_executable": str(python)})


@task(task_config=two_nodes_on("mpich"))
def two_nodes_mpich(x: int, fail_on_rank: int) -> (List[str], FlyteFile):
    return report_world(x, fail_on_rank)


@task(task_config=two_nodes_on("impi"))
def two_nodes_impi(x: int, fail_on_rank: int) -> (List[str], FlyteFile):
    return report_world(x, fail_on_rank)


@task(task_config=RayMPIJob(worker=Worker(replicas=2), slots=1))
def two_one_cpu_nodes(x: int, fail_on_rank: int) -> (List[str], FlyteFile):
    return report_world(x, fail_on_rank)


@task
def read_report(report: FlyteFile) -> str:
    """A plain downstream task: it reads rank 0's file from the task output location."""
    with open(report) as f:
        return f"{node_ips()}\n{f.read()}"


@task(task_config=RayMPIJob(worker=Worker(replicas=2), slots=2), enable_deck=True)
def two_nodes_decked() -> List[str]:
    """Each rank's "rank node-IPs"; the task's deck shows the world."""
    from mpi4py import MPI

    return MPI.COMM_WORLD.gather(f"{MPI.COMM_WORLD.rank} {node_ips()}", root=0)


@task(task_config=RayMPIJob(worker=Worker(replicas=2), slots=2))
def two_nodes_waiting(started: str) -> int:
    """All ranks wait (for a node to be lost) once rank 0 has written its node's IP to `started`."""
    import time

    from mpi4py import MPI

    MPI.COMM_WORLD.barrier()
    if MPI.COMM_WORLD.rank == 0:
        Path(started).write_text(node_ips())
    time.sleep(600)
    return 0


@task(task_config=RayMPIJob(worker=Worker(replicas=2, requests=Resources(gpu="2")), slots=2))
def two_gpu_nodes() -> List[str]:
    """Each rank's "node IPs, CUDA_VISIBLE_DEVICES"."""
    from mpi4py import MPI

    return MPI.COMM_WORLD.gather(f"{node_ips()} {os.environ.get('CUDA_VISIBLE_DEVICES', 'none')}", root=0)


@ray.remote(num_cpus=0)
class GPUHolder:
    """Holds the GPUs it was given, so that the next reservation on its node gets others."""

    def gpus(self) -> str:
        return os.environ.get("CUDA_VISIBLE_DEVICES", "none")


@task(task_config=RayMPIJob(worker=Worker(replicas=3), slots=2, placement_timeout_seconds=20))
def three_nodes() -> int:
    """More worker nodes than the test cluster has."""
    return 0


@task(task_config=RayMPIJob(worker=Worker(replicas=2), slots=1, mpirun_args=["--prefix", "/nonexistent"]))
def no_daemons_elsewhere() -> int:
    """mpirun looks for its daemon under a prefix no other node has (as where their MPI is installed elsewhere)."""
    return 0


@task(task_config=RayMPIJob(worker=Worker(replicas=2), slots=1))
def horovod_two_nodes(epochs: int) -> (float, List[str]):
    """The Horovod example's training, one rank on each of two nodes: the held-out accuracy, and every
    rank's "node IPs, parameter digest", allgathered by Horovod (the driver puts examples/ on sys.path)."""
    import hashlib

    import horovod.torch as hvd
    from examples import horovod_digits

    model, accuracy = horovod_digits.train(epochs=epochs, batch_size=32, learning_rate=0.005)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    return accuracy, hvd.allgather_object(f"{node_ips()} {digest}")


@task(task_config=RayMPIJob(worker=Worker(replicas=2), slots=1))
def two_nodes_held(started: str, release: str) -> int:
    """Once every rank has started (rank 0 then writes `started`), all wait until `release` exists; the sum
    of the ranks."""
    import time

    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    comm.barrier()
    if comm.rank == 0:
        Path(started).write_text(node_ips())
    while not os.path.exists(release):
        time.sleep(0.2)
    return comm.allreduce(comm.rank)
