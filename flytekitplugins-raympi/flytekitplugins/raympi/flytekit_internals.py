"""Every flytekit internal that flytekitplugins.raympi depends on, in one place, as raympi.ray_internals is for Ray.
tests/test_flytekit_contract.py checks each against the installed flytekit and names the one that changed; no other
module of the package spells one of these names.

 1. `flytekit.deck.deck._output_deck(task_name, new_user_params)` writes the decks of a local run to a new local
    `deck.html` and logs its path, as flytekit's PythonTask does after a local run. launch (the driver writes a local
    run's decks, a failed run's too).
 2. `SyncCheckpoint`'s `_checkpoint_dest` and `_checkpoint_src` (this attempt's and the previous attempt's
    checkpoint locations, which flytekit's entrypoint gave it) and `_td`, the TemporaryDirectory that `restore()`
    and `save()` work in. launch (checkpoint_locations), ranks (RankCheckpoint: its scratch space in the rank's
    working directory).
 3. `PythonFunctionTask.dispatch_execute(task, ctx, literals)` runs `task.execute(**inputs)` and makes the output
    literals, the decks of a local run written: rank 0 runs it unbound, bypassing the plugin's own
    `dispatch_execute`, to run the task as flytekit would. ranks (run_rank0).
 4. `ArrayNodeMapTask` runs each element through the mapped task's `execute(**inputs)`, never its
    `dispatch_execute`: locally (`_raw_execute`) and in the job it runs on a cluster (`execute`). task (execute).
"""

import tempfile
from typing import Optional, Tuple

from flytekit import PythonFunctionTask
from flytekit.core.checkpointer import SyncCheckpoint
from flytekit.core.context_manager import ExecutionParameters, FlyteContext
from flytekit.models.literals import LiteralMap


def output_deck(task_name: str, params: ExecutionParameters) -> None:
    """Write a local run's decks, as flytekit does. (1)"""
    from flytekit.deck.deck import _output_deck

    _output_deck(task_name, params)


def checkpoint_locations(checkpoint: SyncCheckpoint) -> Tuple[str, Optional[str]]:
    """(this attempt's destination, the previous attempt's) of the checkpoint flytekit's entrypoint made. (2)"""
    return checkpoint._checkpoint_dest, checkpoint._checkpoint_src


def move_scratch(checkpoint: SyncCheckpoint, directory: str) -> None:
    """Have `checkpoint` restore and save through a scratch directory inside `directory`. (2)"""
    checkpoint._td.cleanup()
    checkpoint._td = tempfile.TemporaryDirectory(dir=directory, ignore_cleanup_errors=True)


def run_as_flytekit(task: PythonFunctionTask, ctx: FlyteContext, inputs: LiteralMap) -> LiteralMap:
    """Run `task` as flytekit's PythonFunctionTask would, whatever its own dispatch_execute does. (3)"""
    return PythonFunctionTask.dispatch_execute(task, ctx, inputs)
