"""The "MPI world" deck of a RayMPIJob with `enable_deck=True`: its ranks by node, one timeline bar per rank (and one for
Ray's part on the driver), and each rank's output. Built on the driver from raympi.world's view, which rank 0 returns
with the task's outputs or its error."""

import html
from datetime import datetime
from typing import Dict, List, Optional, Tuple

import pandas as pd
from flytekit import Deck
from flytekitplugins.deck.renderer import TableRenderer

DECK_NAME = "MPI world"
# Each rank's phases, between its marks (raympi.world.mark): `ranks.py` marks "started" (the process) and "body
# started", raympi marks "joined" (the world) and "ended" (the entry or the task's body).
RANK_PHASES = (("starting", "started", "joined"), ("waiting for the call", "joined", "body started"),
               ("body", "body started", "ended"))
# Ray's phases of the call, marked on the driver and by rank 0: a world started for the call, or a warm one (started
# before the call, see warm.py) handed the call.
RAY_PHASES = (("reserving the placement", "called", "placement reserved"),
              ("starting the world", "placement reserved", "world started"),
              ("handing the call to the warm world", "placement reserved", "warm world took the call"))


class RankTimelineRenderer:
    """A plotly timeline with one bar per rank, coloured by phase (flytekitplugins-deck's GanttChartRenderer draws one
    bar per phase). Rows: Rank, Phase, Start, Finish (datetimes)."""

    def to_html(self, df: pd.DataFrame) -> str:
        import plotly.express as px

        figure = px.timeline(df, x_start="Start", x_end="Finish", y="Rank", color="Phase")
        figure.update_yaxes(autorange="reversed", title="")
        return figure.to_html(full_html=False, include_plotlyjs=True)  # inline: the deck is read offline too


def world_deck(ranks: List[dict], driver_marks: Dict[str, float], failure: Optional[Tuple[int, str]]) -> Deck:
    """The deck of a world (`ranks` as raympi.world.view returns them) that finished, or failed (`failure`: the rank
    that failed, and how rank 0 ended)."""
    ranks = [{**rank, "state": _state(rank, failure), "failed": failure is not None and rank["rank"] == failure[0]}
             for rank in ranks]
    deck = Deck(DECK_NAME, auto_add_to_deck=False)
    deck.append(f"<h3>{len(ranks)} MPI ranks on {len({r['node_ip'] for r in ranks})} node(s)</h3>")
    deck.append(TableRenderer().to_html(_table(ranks)))
    deck.append(RankTimelineRenderer().to_html(_timeline(ranks, driver_marks)))
    deck.append("".join(_output(rank) for rank in ranks))
    return deck


def _state(rank: dict, failure: Optional[Tuple[int, str]]) -> str:
    if rank["rank"] == 0:
        return failure[1] if failure else "finished"
    return rank["state"] or ("ended with the world" if failure else "did not say it ended")


def _table(ranks: List[dict]) -> pd.DataFrame:
    rows = [{"node IP": r["node_ip"], "host": r["host"], "rank": r["rank"], "pid": r["pid"],
             "accelerators": " ".join(f"{k}={v}" for k, v in r["report"].get("accelerators", {}).items()) or "-",
             "state": f"FAILED: {r['state']}" if r["failed"] else r["state"]} for r in ranks]
    return pd.DataFrame(rows).sort_values(["node IP", "rank"])


def _timeline(ranks: List[dict], driver_marks: Dict[str, float]) -> pd.DataFrame:
    """A rank that did not mark its end (ended with a failed world) is drawn up to the last mark of any rank."""
    marks = {rank["rank"]: rank["report"].get("marks", {}) for rank in ranks}
    last = max((time for rank_marks in marks.values() for time in rank_marks.values()), default=None)
    joined = marks[0].get("joined")
    if joined is not None and joined < driver_marks["placement reserved"]:  # warm
        ray_marks = {**driver_marks, "warm world took the call": marks[0].get("body started")}
    else:
        ray_marks = {**driver_marks, "world started": joined}
    rows = _bars("Ray (driver and rank 0)", ray_marks, RAY_PHASES)
    for rank in ranks:
        phases = [(f"{name} (failed)" if rank["failed"] and name == "body" else name, start, end)
                  for name, start, end in RANK_PHASES]
        rows += _bars(f"rank {rank['rank']} ({rank['node_ip']})", marks[rank["rank"]], phases, last)
    return pd.DataFrame(rows, columns=["Rank", "Phase", "Start", "Finish"])


def _bars(label: str, marks: Dict[str, Optional[float]], phases, last: Optional[float] = None) -> List[tuple]:
    """A row per phase that started; one that did not end ends at `last`."""
    rows = []
    for name, start, end in phases:
        finish = marks.get(end) or last
        if marks.get(start) and finish:
            rows.append((label, name, datetime.fromtimestamp(marks[start]), datetime.fromtimestamp(finish)))
    return rows


def _output(rank: dict) -> str:
    return (f"<details><summary>rank {rank['rank']} on {html.escape(rank['host'])} (pid {rank['pid']}): output"
            f"</summary><pre>{html.escape(rank['output'] or '(nothing)')}</pre></details>")
