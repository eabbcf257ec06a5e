"""A cold local run of a one-task workflow, as a user's `python wf.py` (the harness times the process):

    python -m benchmarks.workflow raympijob|kfmpi|plain RANKS
"""

import sys

from benchmarks.tasks import one_task_workflow

if __name__ == "__main__":
    one_task_workflow(sys.argv[1], int(sys.argv[2]))()
