"""Reading an offline W&B run back from its transaction log (``run-<id>.wandb``) with
wandb's own record format (``wandb.proto.wandb_internal_pb2.Record``): the history rows
and summary a run logged, as a synced run would show them. The log is LevelDB's framing:
a 7-byte file header, then 32 KiB blocks of records, each a 7-byte header (checksum,
length, type: full / first / middle / last) and its bytes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

_BLOCK = 32 * 1024
_HEADER = 7


def _chunks(data: bytes) -> Iterator[bytes]:
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, pending = _HEADER, b""
    while pos + _HEADER <= len(data):
        left = _BLOCK - pos % _BLOCK
        if left < _HEADER:  # a block's tail too short for a header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        body = data[pos + _HEADER:pos + _HEADER + length]
        pos += _HEADER + length
        if kind == 1:
            yield body
        elif kind == 2:
            pending = body
        elif kind == 3:
            pending += body
        elif kind == 4:
            yield pending + body


def read_run(path: Path) -> dict[str, Any]:
    """``{"history": [row, ...], "summary": {...}, "config": {...}, "artifacts": [names],
    "artifact_types": {name: type}, "artifact_metadata": {name: {...}}}``."""
    from wandb.proto import wandb_internal_pb2 as pb

    out: dict[str, Any] = {"history": [], "summary": {}, "config": {}, "artifacts": [], "artifact_types": {},
                           "artifact_metadata": {}}
    for chunk in _chunks(path.read_bytes()):
        r = pb.Record()
        r.ParseFromString(chunk)
        kind = r.WhichOneof("record_type")
        if kind == "history":
            out["history"].append({i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item})
        elif kind == "summary":
            for i in r.summary.update:
                out["summary"][i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
        elif kind in ("config", "run"):
            for i in (r.config if kind == "config" else r.run.config).update:
                out["config"][i.key or "/".join(i.nested_key)] = json.loads(i.value_json)
        elif kind == "artifact":
            out["artifacts"].append(r.artifact.name)
            out["artifact_types"][r.artifact.name] = r.artifact.type
            out["artifact_metadata"][r.artifact.name] = json.loads(r.artifact.metadata) if r.artifact.metadata else {}
    return out
