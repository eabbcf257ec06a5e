"""Files and directories that rank 0 returns as local paths (a local run keeps them where they were
written) carried back to the driver when rank 0 ran on another node: a path only that node has would
be a lost output."""

import io
import tarfile
from pathlib import Path
from typing import Dict, Iterator, Set

from flyteidl.core import literals_pb2


def local_paths(outputs: bytes) -> Set[str]:
    """The local files and directories that the outputs (a serialized LiteralMap) refer to."""
    return {blob.uri for blob in _blobs(literals_pb2.LiteralMap.FromString(outputs)) if "://" not in blob.uri}


def pack(outputs: bytes) -> Dict[str, bytes]:
    """{local path: a tar of it} for every local file or directory the outputs refer to."""
    packed = {}
    for path in local_paths(outputs):
        data = io.BytesIO()
        with tarfile.open(fileobj=data, mode="w") as archive:
            archive.add(path, arcname=Path(path).name)
        packed[path] = data.getvalue()
    return packed


def unpack(outputs: bytes, packed: Dict[str, bytes], into: str) -> bytes:
    """The outputs with each packed path extracted under `into` and referred to there."""
    literals = literals_pb2.LiteralMap.FromString(outputs)
    places = {}
    for index, (path, data) in enumerate(packed.items()):
        place = Path(into) / str(index)
        with tarfile.open(fileobj=io.BytesIO(data)) as archive:
            archive.extractall(place, filter="data")
        places[path] = str(place / Path(path).name)
    for blob in _blobs(literals):
        blob.uri = places.get(blob.uri, blob.uri)
    return literals.SerializeToString()


def _blobs(literals: literals_pb2.LiteralMap) -> Iterator:
    """Every message with a `uri` (files, directories, dataframes) in a LiteralMap, however nested."""
    pending = list(literals.literals.values())
    while pending:
        literal = pending.pop()
        kind = literal.WhichOneof("value")
        if kind == "scalar" and literal.scalar.WhichOneof("value") in ("blob", "structured_dataset"):
            yield getattr(literal.scalar, literal.scalar.WhichOneof("value"))
        elif kind == "collection":
            pending.extend(literal.collection.literals)
        elif kind == "map":
            pending.extend(literal.map.literals.values())
