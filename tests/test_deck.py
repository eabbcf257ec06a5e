"""The "MPI world" deck of a RayMPIJob with enable_deck=True: written where flytekit writes decks, for a run that
finished or failed, and seen in a real browser."""

import base64
import json
import logging
import os
import re
import socket
from pathlib import Path
from typing import List

import numpy as np
import pytest
import ray
import raympi.world
from flytekit import task

from browser import render
from decks import world_table
from flytekitplugins.raympi import RayMPIJob, Worker, warm

pytestmark = pytest.mark.usefixtures("embedded_ray")
SHOW_DECK = ("[...document.querySelectorAll('#flyte-frame-tabs li')].find(li => li.textContent.trim() == 'MPI world')"
             ".click(); document.querySelectorAll('details').forEach(d => d.open = true)")
# The only thing a deck page loads from the network: flytekit's deck template's web fonts (this machine is offline).
TEMPLATE_FONTS = "https://fonts.googleapis.com/"


@pytest.fixture
def flytekit_log(caplog):
    """flytekit's logger does not propagate: hand its records to caplog, at its default level (WARNING)."""
    logger = logging.getLogger("flytekit")
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def deck_file(log, task_name: str) -> Path:
    """The deck the task's last call wrote."""
    written = re.findall(rf"{task_name}: the task's decks \(the MPI world's among them\) are in file://(\S+)", log.text)
    assert written, f"no deck written for {task_name}: {log.text[-3000:]}"
    return max(map(Path, written), key=lambda path: path.stat().st_mtime)


@task(task_config=RayMPIJob(worker=Worker(replicas=2), slots=2), enable_deck=True)
def decked_world(fail_on: int) -> List[str]:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    print(f"rank {comm.rank} says hello")
    if comm.rank == fail_on:
        raise ValueError(f"rank {comm.rank} gives up")
    return comm.gather(f"{comm.rank} {socket.gethostname()} {os.getpid()}", root=0)


def test_a_4_rank_worlds_deck_shows_each_rank_where_it_ran_a_bar_each_and_its_output_in_a_browser(
        flytekit_log, tmp_path):
    ranks = decked_world(fail_on=-1)
    page = render(deck_file(flytekit_log, "decked_world"), tmp_path / "deck.png", settle=1.0, script=SHOW_DECK)
    assert [e for e in page.errors if TEMPLATE_FONTS not in e] == [], "the deck page loads without errors"

    table = world_table(page.html)
    assert [f"{r['rank']} {r['host']} {r['pid']}" for r in table] == ranks, "as the ranks say of themselves"
    assert {r["state"] for r in table} == {"finished"}
    assert len({r["node IP"] for r in table}) == 1
    bars = re.findall(r'class="ytick"><text[^>]*>([^<]+)</text>', page.html)
    assert sorted(bars) == ["Ray (driver and rank 0)"] + [f"rank {n} ({table[0]['node IP']})" for n in range(4)], \
        "one timeline bar per rank, drawn"
    for rank in range(4):
        assert f"rank {rank} says hello" in page.text
    assert "MPI world" in page.text and page.screenshot.stat().st_size > 10_000


def timeline(html: str) -> List[dict]:
    """The deck's timeline bars, as plotly draws them: {"phase", "row", "start", "ms"} each."""
    figure = html.index("Plotly.newPlot(")
    traces, _ = json.JSONDecoder().raw_decode(html, html.index("[", html.index(",", figure)))
    return [{"phase": trace["name"], "row": row, "start": start, "ms": ms}
            for trace in traces for row, start, ms in zip(trace["y"], trace["base"], _values(trace["x"]))]


def _values(array) -> list:
    """A plotly array: a list, or typed and base64-encoded ({"dtype", "bdata"})."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return array


def test_a_warm_calls_timeline_runs_forwards_and_says_the_world_was_warm(flytekit_log):
    decked_world(fail_on=-1)
    ray.get(warm._waiting.world.__ray_ready__.remote(), timeout=120)  # the warm world started after it is up
    decked_world(fail_on=-1)
    bars = timeline(deck_file(flytekit_log, "decked_world").read_text())
    assert [b for b in bars if b["ms"] < 0] == [], "no bar runs backwards"
    ray_phases = {b["phase"] for b in bars if b["row"] == "Ray (driver and rank 0)"}
    assert ray_phases == {"reserving the placement", "handing the call to the warm world"}
    waited = [b for b in bars if b["phase"] == "waiting for the call"]
    assert len(waited) == 4, "every rank of the warm world waited for the call"


def test_a_failed_worlds_deck_is_written_and_marks_the_rank_that_failed(flytekit_log):
    with pytest.raises(Exception, match="rank 2 gives up"):
        decked_world(fail_on=2)
    table = world_table(deck_file(flytekit_log, "decked_world").read_text())
    states = {int(r["rank"]): r["state"] for r in table}
    assert states[2].startswith("FAILED: raised ValueError: rank 2 gives up")
    assert states[0] == "ended with the world (rank 2 failed)"
    assert not any(state.startswith("FAILED") for rank, state in states.items() if rank != 2)


@task(task_config=RayMPIJob(worker=Worker(replicas=2), slots=2))
def undecked_world() -> List[str]:
    """What rank 0 has heard of its peers, once all of them run their body: with decks off, nothing for a deck."""
    from mpi4py import MPI

    MPI.COMM_WORLD.barrier()
    if MPI.COMM_WORLD.rank == 0:
        return [f"{r['report']} {r['output']!r}" for r in raympi.world.view()[1:]]
    return []


def test_without_decks_no_deck_is_written_and_the_peers_send_nothing_for_one(flytekit_log):
    assert undecked_world() == ["{} ''"] * 3, "no report shared and no output kept"
    assert "deck.html" not in flytekit_log.text
