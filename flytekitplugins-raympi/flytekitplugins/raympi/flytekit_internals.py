"""Every flytekit internal that flytekitplugins.raympi depends on, in one place, as raympi.ray_internals is for Ray.
tests/test_flytekit_contract.py checks each against the installed flytekit and names the one that changed; no other
module of the package spells one of these names.

 1. `flytekit.deck.deck._get_deck(new_user_params, ignore_jupyter=True)` renders a run's decks as the page that
    flytekit writes to `deck.html` (`DECK_FILE_NAME`). launch (the driver writes a local run's decks, a failed
    run's too, and says where).
 2. `SyncCheckpoint`'s `_checkpoint_dest` and `_checkpoint_src` (this attempt's and the previous attempt's
    checkpoint locations, which flytekit's entrypoint gave it) and `_td`, the TemporaryDirectory that `restore()`
    and `save()` work in. launch (checkpoint_locations), ranks (RankCheckpoint: its scratch space in the rank's
    working directory).
 3. `PythonFunctionTask.dispatch_execute(task, ctx, literals)` runs `task.execute(**inputs)` and makes the output
    literals, the decks of a local run written: rank 0 runs it unbound, bypassing the plugin's own
    `dispatch_execute`, to run the task as flytekit would. ranks (run_rank0).
 4. `ArrayNodeMapTask` runs each element through the mapped task's `execute(**inputs)`, never its
    `dispatch_execute`: locally (`_raw_execute`) and in the job it runs on a cluster (`execute`). task (execute).
 5. `PythonTask._write_decks` looks up `flytekit.deck.deck._output_deck` when it runs, to write a local run's deck
    file: rank 0 replaces it for its call (run_as_flytekit), the driver writing the run's one deck file (1).
 6. `flytekit.core.data_persistence.flyte_tmp_dir` and `flytekit.configuration.Config.local_sandbox_path`'s default:
    directories that every process importing flytekit makes for its default context (again in each new thread that
    asks for a context) and never removes. ranks (a rank removes those it made: it works in a directory of its own;
    a rank forked from a template leaves the template's, which every rank forked from it uses, to the template).
"""

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Optional, Tuple

from flytekit import PythonFunctionTask
from flytekit.core.checkpointer import SyncCheckpoint
from flytekit.core.context_manager import ExecutionParameters, FlyteContext
from flytekit.models.literals import LiteralMap

# The process that imported flytekit, as it imported this module: it made the directories of (6).
_IMPORTED_BY = os.getpid()


def write_deck(params: ExecutionParameters, directory: str) -> str:
    """Write a run's decks to `deck.html` in `directory`, as flytekit does after a local run; return its path. (1)"""
    from flytekit.deck.deck import DECK_FILE_NAME, _get_deck

    path = os.path.join(directory, DECK_FILE_NAME)
    Path(path).write_text(_get_deck(params, ignore_jupyter=True), encoding="utf-8")
    return path


def checkpoint_locations(checkpoint: SyncCheckpoint) -> Tuple[str, Optional[str]]:
    """(this attempt's destination, the previous attempt's) of the checkpoint flytekit's entrypoint made. (2)"""
    return checkpoint._checkpoint_dest, checkpoint._checkpoint_src


def move_scratch(checkpoint: SyncCheckpoint, directory: str) -> None:
    """Have `checkpoint` restore and save through a scratch directory inside `directory`. (2)"""
    checkpoint._td.cleanup()
    checkpoint._td = tempfile.TemporaryDirectory(dir=directory, ignore_cleanup_errors=True)


def remove_flytekit_tmp_dirs() -> None:
    """Remove the directories that flytekit made for this process's default context, if this process imported it:
    a forked process shares them with the one it was forked from. (6)"""
    from flytekit.configuration import Config
    from flytekit.core import data_persistence

    if os.getpid() != _IMPORTED_BY:
        return
    for path in (data_persistence.flyte_tmp_dir, Config.local_sandbox_path):
        shutil.rmtree(path, ignore_errors=True)


def run_as_flytekit(task: PythonFunctionTask, ctx: FlyteContext, inputs: LiteralMap) -> LiteralMap:
    """Run `task` as flytekit's PythonFunctionTask would, whatever its own dispatch_execute does (3), its decks made
    but no deck file written: the driver writes the run's (5)."""
    with _no_deck_file():
        return PythonFunctionTask.dispatch_execute(task, ctx, inputs)


@contextmanager
def _no_deck_file():
    """While inside, flytekit writes no local deck file. (5)"""
    from flytekit.deck import deck

    output_deck = deck._output_deck
    deck._output_deck = lambda task_name, new_user_params: None
    try:
        yield
    finally:
        deck._output_deck = output_deck
