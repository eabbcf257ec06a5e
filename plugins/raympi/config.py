"""The `mpi` runtime env field: its JSON schema and the validated config. MPIPlugin.validate checks every value
on the node; Ray checks the registered schema only where a field is set on a `RuntimeEnv` object."""

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import jsonschema

SCHEMA_PATH = Path(__file__).with_name("mpi_schema.json")
_SCHEMA = json.loads(SCHEMA_PATH.read_text())


@dataclass(frozen=True)
class MPIConfig:
    worker_entry: str
    args: List[str] = field(default_factory=list)
    hosts: List[str] = field(default_factory=list)
    launchers: Dict[str, int] = field(default_factory=dict)
    world: Optional[str] = None
    flavour: str = "openmpi"
    preload: Optional[List[str]] = None

    @classmethod
    def parse(cls, value) -> "MPIConfig":
        """Validate `runtime_env["mpi"]`; the error names the field and what it accepts."""
        try:
            jsonschema.validate(value, _SCHEMA)
        except jsonschema.ValidationError as error:
            where = "".join(f"[{p!r}]" for p in error.absolute_path)
            raise ValueError(f"runtime_env['mpi']{where}: {error.message}. Expected {_EXPECTED}.") from None
        config = cls(**value)
        unlaunched = [host for host in config.hosts[1:] if host.rsplit(":", 1)[0] not in config.launchers]
        if unlaunched:
            raise ValueError(f"runtime_env['mpi']['launchers'] has no daemon launcher for the hosts {unlaunched}: "
                             "take hosts, launchers and world together from raympi.placement(...)")
        return config


_EXPECTED = ('{"args": ["-n", "4", ...] (strings, passed to mpirun), "worker_entry": "module.function" (what ranks '
             '1..N-1 run), optionally "flavour": "openmpi" (default), "mpich" or "impi", "preload": ["module", ...] '
             '(ranks fork from a template that imported them), and for a world on several nodes '
             '**raympi.placement(placement_group, slots)}')
