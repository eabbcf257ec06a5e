"""Reading the "MPI world" deck (flytekitplugins/raympi/deck.py) as a page."""

from html.parser import HTMLParser
from typing import List


class Tables(HTMLParser):
    """The rows of every <table> of a page, as lists of cell texts."""

    def __init__(self, html: str):
        super().__init__()
        self.rows: List[List[str]] = []
        self._cell = None
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(self._cell.strip())
            self._cell = None


def world_table(html: str) -> List[dict]:
    """The deck's table of ranks."""
    rows = Tables(html[html.index("MPI ranks on"):]).rows
    header = rows[0]
    assert header == ["node IP", "host", "rank", "pid", "accelerators", "state"], rows[:2]
    return [dict(zip(header, row)) for row in rows[1:len(rows)] if len(row) == len(header)]
