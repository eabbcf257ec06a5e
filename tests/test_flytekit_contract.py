"""The flytekit internals flytekitplugins.raympi depends on (flytekitplugins/raympi/flytekit_internals.py lists them,
numbered), each checked against the installed flytekit, in seconds and without Ray. A failure names the internal
that changed: run this first when trying another flytekit.

    .venv/bin/python -m pytest tests/test_flytekit_contract.py -q
"""

import logging
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import flytekit
from flytekit import Deck, PythonFunctionTask, map_task
from flytekit.core.checkpointer import SyncCheckpoint
from flytekit.core.context_manager import ExecutionState, FlyteContextManager
from flytekit.core.type_engine import TypeEngine

from flytekitplugins.raympi import flytekit_internals

INTERNALS = {
    1: "flytekit.deck.deck._get_deck(new_user_params, ignore_jupyter=True)",
    2: "SyncCheckpoint._checkpoint_dest, _checkpoint_src and _td",
    3: "PythonFunctionTask.dispatch_execute runs task.execute",
    4: "ArrayNodeMapTask runs each element through the mapped task's execute",
    5: "PythonTask._write_decks looks up flytekit.deck.deck._output_deck when it runs",
    6: "flytekit makes data_persistence.flyte_tmp_dir and Config.local_sandbox_path for the default context",
}


def broken(number: int) -> str:
    return (f"flytekit {flytekit.__version__} broke flytekitplugins.raympi's contract with flytekit internal "
            f"#{number} {INTERNALS[number]} (flytekitplugins/raympi/flytekit_internals.py): ")


def test_1_a_runs_decks_are_written_as_one_page(tmp_path):
    params = FlyteContextManager.current_context().user_space_params
    params.decks.append(Deck("contract", "<p>the contract's deck</p>", auto_add_to_deck=False))
    path = Path(flytekit_internals.write_deck(params, str(tmp_path)))
    assert path == tmp_path / "deck.html", broken(1) + str(path)
    page = path.read_text()
    assert "<html" in page and "the contract's deck" in page, broken(1) + page[:500]


def test_2_a_checkpoint_tells_its_locations_and_restores_through_its_scratch_directory(tmp_path):
    previous = tmp_path / "previous"
    previous.mkdir()
    (previous / "state").write_text("epoch 3")
    checkpoint = SyncCheckpoint(checkpoint_dest=str(tmp_path / "now"), checkpoint_src=str(previous))
    assert flytekit_internals.checkpoint_locations(checkpoint) == (str(tmp_path / "now"), str(previous)), broken(2)
    scratch = tmp_path / "rank"
    scratch.mkdir()
    flytekit_internals.move_scratch(checkpoint, str(scratch))
    restored = checkpoint.restore()
    assert restored is not None and scratch in restored.parents, broken(2) + f"restored to {restored}"
    assert (restored / "state").read_text() == "epoch 3", broken(2)


class Recorded(PythonFunctionTask):
    """A task whose own dispatch_execute and execute say they ran."""

    calls = []

    def dispatch_execute(self, ctx, input_literal_map):
        raise AssertionError("the task's own dispatch_execute ran")

    def execute(self, **kwargs):
        Recorded.calls.append(kwargs)
        return super().execute(**kwargs)


def double(x: int) -> int:
    return 2 * x


def test_3_dispatch_execute_unbound_runs_the_tasks_execute_and_makes_its_outputs():
    recorded = Recorded(task_config=None, task_function=double)
    ctx = FlyteContextManager.current_context()
    inputs = TypeEngine.dict_to_literal_map(ctx, {"x": 21}, {"x": int})
    Recorded.calls.clear()
    outputs = flytekit_internals.run_as_flytekit(recorded, ctx, inputs)
    assert Recorded.calls == [{"x": 21}], broken(3) + f"execute got {Recorded.calls}"
    assert TypeEngine.literal_map_to_kwargs(ctx, outputs, {"o0": int}) == {"o0": 42}, broken(3)


def test_4_a_map_task_runs_each_element_through_the_mapped_tasks_execute():
    recorded = Recorded(task_config=None, task_function=double)
    Recorded.calls.clear()
    assert map_task(recorded)(x=[1, 2, 3]) == [2, 4, 6]
    assert Recorded.calls == [{"x": 1}, {"x": 2}, {"x": 3}], broken(4) + f"execute got {Recorded.calls}"


def test_5_rank0s_local_run_makes_its_decks_and_writes_no_deck_file(caplog):
    """flytekit's own local run writes the deck file and says so at INFO; run_as_flytekit does neither."""
    decked = PythonFunctionTask(task_config=None, task_function=double, enable_deck=True)
    logger = logging.getLogger("flytekit")
    logger.addHandler(caplog.handler)
    caplog.set_level(logging.INFO, logger="flytekit")
    try:
        with FlyteContextManager.with_context(FlyteContextManager.current_context().with_execution_state(
                FlyteContextManager.current_context().new_execution_state().with_params(
                    mode=ExecutionState.Mode.LOCAL_TASK_EXECUTION))) as ctx:
            inputs = TypeEngine.dict_to_literal_map(ctx, {"x": 21}, {"x": int})
            flytekit_internals.run_as_flytekit(decked, ctx, inputs)
            ours = caplog.text
            PythonFunctionTask.dispatch_execute(decked, ctx, inputs)
    finally:
        logger.removeHandler(caplog.handler)
    assert "creates flyte deck html" in caplog.text, "flytekit's own run wrote no deck file: the test sees nothing"
    assert "creates flyte deck html" not in ours, broken(5) + ours
    assert {"Input", "Output"} <= {deck.name for deck in ctx.user_space_params.decks}, broken(5)


def test_6_the_default_context_works_in_the_directories_flytekit_made_as_it_imported():
    """In a thread of its own: a new thread asks flytekit for a context as rank 0's body thread does."""
    from flytekit.configuration import Config
    from flytekit.core import data_persistence

    made = {Path(data_persistence.flyte_tmp_dir), Path(Config.local_sandbox_path)}
    assert all(path.is_dir() and path.parent == Path(tempfile.gettempdir()) for path in made), broken(6) + str(made)
    with ThreadPoolExecutor(max_workers=1) as thread:
        ctx = thread.submit(FlyteContextManager.current_context).result()
    used = {Path(ctx.execution_state.engine_dir), Path(ctx.user_space_params.working_directory)}
    assert all(any(path in use.parents for path in made) for use in used), broken(6) + f"{used} not in {made}"
