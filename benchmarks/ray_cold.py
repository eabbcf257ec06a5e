"""Ray's own cold start, for reference: start a local Ray as RayMPIJob's embedded one is started, run one
task, stop (the harness times the process).

    python -m benchmarks.ray_cold CPUS
"""

import logging
import sys

import ray


@ray.remote
def nothing() -> int:
    return 1


if __name__ == "__main__":
    ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, logging_level=logging.WARNING)
    ray.get(nothing.remote())
    ray.shutdown()
