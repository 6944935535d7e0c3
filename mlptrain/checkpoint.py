"""Checkpoints: a plain dict of tensors and primitives, written atomically, read with weights_only.

Nothing is pickled beyond what ``torch.load(weights_only=True)`` accepts, so a checkpoint from
anywhere cannot run code when it is opened.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, BinaryIO

import torch

from mlptrain.errors import CheckpointError
from mlptrain.runs import atomic_write

FORMAT = "mlptrain-checkpoint"
FORMAT_VERSION = 2  # 2: last.pt carries the state `mlptrain resume` needs (1 is still read for eval/predict)


def write(f: BinaryIO, state: dict[str, Any]) -> None:
    """Stream a checkpoint, with the format marker ``load`` checks, into an open binary file."""
    torch.save({"format": FORMAT, "format_version": FORMAT_VERSION, **state}, f)


def save(path: Path, state: dict[str, Any]) -> None:
    """Atomically (temporary file, fsync, rename): a crash never leaves half a checkpoint."""
    atomic_write(Path(path), lambda f: write(f, state))


def sha256(path: Path) -> str:
    """The SHA-256 of a checkpoint file, as summary.json records it."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint on the CPU, refusing anything that is not one of ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; give a .pt file from a run's checkpoints/ folder")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for truncated, foreign or unsafe files
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            first = "it holds Python objects that a safe load refuses"
        raise CheckpointError(f"{path}: not a readable mlptrain checkpoint ({first[:200]})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mlptrain checkpoint (no '{FORMAT}' marker); give a file from checkpoints/")
    version = state.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this mlptrain reads ({FORMAT_VERSION}); upgrade mlptrain"
        )
    return state
