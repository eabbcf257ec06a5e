"""Distributed training with Horovod and PyTorch on a RayMPIJob: Flyte's Horovod MPIJob example, with the
task config swapped (`MPIJob` -> `RayMPIJob`) and scikit-learn's bundled digits instead of MNIST (no download).

    python examples/horovod_digits.py     # or: pyflyte run examples/horovod_digits.py horovod_training_wf

Every rank trains on its own shard of the training split; Horovod's DistributedOptimizer averages the
gradients with an allreduce at every step, so all ranks hold the same model. Rank 0 returns the model
(a PyTorch state dict) and its accuracy on a held-out split.
"""

from pathlib import Path
from typing import NamedTuple, Tuple

import flytekit
import torch
from flytekit import task, workflow
from flytekit.core.base_task import IgnoreOutputs
from flytekit.types.file import FlyteFile
from flytekitplugins.raympi import Launcher, RayMPIJob, Worker
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn
from torch.utils.data import DataLoader, TensorDataset
from torch.utils.data.distributed import DistributedSampler

TrainedModel = NamedTuple("TrainedModel", [("model", FlyteFile), ("accuracy", float)])


def digits_splits() -> Tuple[TensorDataset, TensorDataset]:
    """The 1797 8x8 digit images scaled to [0, 1]: a training split and a held-out quarter."""
    digits = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        digits.data / 16.0, digits.target, test_size=0.25, random_state=0, stratify=digits.target
    )
    return _dataset(x_train, y_train), _dataset(x_test, y_test)


def _dataset(images, labels) -> TensorDataset:
    return TensorDataset(torch.tensor(images, dtype=torch.float32), torch.tensor(labels))


def digits_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def train(epochs: int, batch_size: int, learning_rate: float) -> Tuple[nn.Module, float]:
    """Horovod training, run by every rank: the trained model and its accuracy on the held-out split."""
    import horovod.torch as hvd

    hvd.init()
    torch.manual_seed(hvd.rank())
    train_set, test_set = digits_splits()
    # Horovod: each rank reads its own shard of the data.
    sampler = DistributedSampler(train_set, num_replicas=hvd.size(), rank=hvd.rank(), seed=0)
    batches = DataLoader(train_set, batch_size=batch_size, sampler=sampler)

    model = digits_model()
    # Horovod: scale the learning rate by the number of ranks, average gradients across ranks,
    # and start every rank from rank 0's weights and optimizer state.
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate * hvd.size())
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)

    loss_fn = nn.CrossEntropyLoss()
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for images, labels in batches:
            optimizer.zero_grad()
            loss = loss_fn(model(images), labels)
            loss.backward()
            optimizer.step()
        if hvd.rank() == 0:
            print(f"epoch {epoch}: loss {loss.item():.4f}")

    # Horovod: every rank scores its shard of the held-out split; an allreduce adds up the counts.
    images, labels = test_set[hvd.rank()::hvd.size()]
    with torch.no_grad():
        correct = (model(images).argmax(dim=1) == labels).sum()
    counts = hvd.allreduce(torch.tensor([correct.item(), len(labels)]), op=hvd.Sum)
    return model, counts[0].item() / counts[1].item()


@task(task_config=RayMPIJob(launcher=Launcher(replicas=1), worker=Worker(replicas=2), slots=1))
def horovod_train_task(epochs: int, batch_size: int, learning_rate: float) -> TrainedModel:
    import horovod.torch as hvd

    model, accuracy = train(epochs, batch_size, learning_rate)
    if hvd.rank() != 0:
        raise IgnoreOutputs("I am not rank 0")

    path = Path(flytekit.current_context().working_directory) / "digits_model.pt"
    torch.save(model.state_dict(), path)
    return TrainedModel(model=FlyteFile(str(path)), accuracy=accuracy)


@workflow
def horovod_training_wf(epochs: int = 20, batch_size: int = 32, learning_rate: float = 0.005) -> TrainedModel:
    """
    :param epochs: passes over the training split (each rank over its shard).
    :param batch_size: images per step on each rank.
    :param learning_rate: Adam's learning rate for one rank; Horovod scales it by the number of ranks.
    """
    return horovod_train_task(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate)


if __name__ == "__main__":
    model, accuracy = horovod_training_wf()
    print(f"model: {model.path}, held-out accuracy: {accuracy:.3f}")
