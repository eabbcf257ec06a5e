"""Horovod, as built by scripts/install-horovod.sh, in RayMPIJob tasks: the world Horovod sees, its
collectives, the training example, and failures inside Horovod ops."""

import hashlib
import json
import socket
from collections import Counter
from typing import List

import pytest
import torch
from flytekit import task
from horovod.common.exceptions import HorovodInternalError

from conftest import recorded_pids, wait_until_gone
from flytekitplugins.raympi import RayMPIJob, Worker
from raympi import MPIRankError

pytestmark = pytest.mark.usefixtures("embedded_ray")


def world(workers: int, slots: int) -> RayMPIJob:
    return RayMPIJob(worker=Worker(replicas=workers), slots=slots)


def horovod_report() -> str:
    """What each rank's Horovod says about the world and what its collectives returned, gathered over
    mpi4py (not over Horovod itself) and returned by rank 0 as JSON."""
    import horovod.torch as hvd
    from mpi4py import MPI

    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    ramp = torch.arange(4, dtype=torch.float64) * (rank + 1)
    report = {
        "mpi": [MPI.COMM_WORLD.rank, MPI.COMM_WORLD.size, socket.gethostname()],
        "horovod": [rank, size, hvd.local_rank(), hvd.local_size()],
        "allreduce_sum": hvd.allreduce(ramp, op=hvd.Sum).tolist(),
        "allreduce_average": hvd.allreduce(ramp).tolist(),
        "allgather": hvd.allgather(torch.full((rank + 1, 2), rank)).tolist(),
        "broadcast": hvd.broadcast(torch.tensor([rank, 10 * rank]), root_rank=size - 1).tolist(),
    }
    return json.dumps(MPI.COMM_WORLD.gather(report, root=0))


two_ranks = task(task_config=world(workers=1, slots=2))(horovod_report)
four_ranks = task(task_config=world(workers=2, slots=2))(horovod_report)


@pytest.mark.parametrize("body, size", [(two_ranks, 2), (four_ranks, 4)])
def test_horovod_sees_the_mpi_world_and_its_collectives_are_exact(body, size):
    reports = json.loads(body())

    assert [r["mpi"][:2] for r in reports] == [[rank, size] for rank in range(size)]
    ranks_before = Counter()
    for report in reports:
        mpi_rank, _, host = report["mpi"]
        on_host = sum(1 for other in reports if other["mpi"][2] == host)
        assert report["horovod"] == [mpi_rank, size, ranks_before[host], on_host]
        ranks_before[host] += 1

    ramp = [0.0, 1.0, 2.0, 3.0]
    total = size * (size + 1) // 2
    gathered = [[r, r] for r in range(size) for _ in range(r + 1)]
    for report in reports:
        assert report["allreduce_sum"] == [x * total for x in ramp]
        assert report["allreduce_average"] == [x * total / size for x in ramp]
        assert report["allgather"] == gathered
        assert report["broadcast"] == [size - 1, 10 * (size - 1)]


def test_training_example_converges_and_returns_the_trained_model():
    from examples import horovod_digits

    model_file, accuracy = horovod_digits.horovod_training_wf()

    assert accuracy >= 0.9
    model = horovod_digits.digits_model()
    model.load_state_dict(torch.load(model_file.download()))
    images, labels = horovod_digits.digits_splits()[1].tensors
    with torch.no_grad():
        assert (model(images).argmax(dim=1) == labels).float().mean().item() == pytest.approx(accuracy)


@task(task_config=world(workers=2, slots=1))
def parameter_digests(epochs: int) -> List[str]:
    """Every rank's digest of its trained parameters, allgathered by Horovod."""
    import horovod.torch as hvd

    from examples import horovod_digits

    model, _ = horovod_digits.train(epochs=epochs, batch_size=32, learning_rate=0.005)
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    return hvd.allgather_object(digest)


def test_every_rank_ends_training_with_identical_parameters():
    # The ranks start from different random weights (seeded by rank): equal digests mean Horovod
    # broadcast rank 0's weights and kept the ranks in step.
    digests = parameter_digests(epochs=3)
    assert len(digests) == 2
    assert len(set(digests)) == 1


@task(task_config=world(workers=1, slots=3))
def horovod_op_fails(mode: str, pids_file: str) -> int:
    """Rank 1 breaks the allreduce the other ranks are in: a tensor of another shape, or an exception."""
    import horovod.torch as hvd
    import mpi_entries

    mpi_entries.record_pids(pids_file)
    hvd.init()
    if hvd.rank() == 1 and mode == "raise":
        raise ValueError("rank 1 fails before the allreduce")
    shape = 3 if hvd.rank() == 1 else 2
    hvd.allreduce(torch.zeros(shape))
    return hvd.rank()


@pytest.mark.parametrize("mode, error_type, message", [
    ("mismatch", (MPIRankError, HorovodInternalError), "Mismatched ALLREDUCE tensor shapes"),
    ("raise", MPIRankError, "rank 1 fails before the allreduce"),
])
def test_failing_horovod_op_fails_the_task_and_leaves_nothing(tmp_path, mode, error_type, message):
    pids_file = tmp_path / "pids"
    with pytest.raises(error_type, match=message):
        horovod_op_fails(mode=mode, pids_file=str(pids_file))
    assert wait_until_gone(recorded_pids(pids_file)) == set(), "MPI processes outlived the failed task"
