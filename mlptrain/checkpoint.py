"""Checkpoints: a plain dict of tensors and primitives, written atomically, read with weights_only.

Nothing is pickled beyond what ``torch.load(weights_only=True)`` accepts, so a checkpoint from
anywhere cannot run code when it is opened.
"""

from __future__ import annotations

import hashlib
import io
import pickletools
import re
import warnings
from pathlib import Path
from typing import Any, BinaryIO, Optional

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


DAMAGED_HINT = "use checkpoints/best.pt or last.pt of a finished run"


def load(path: Path, damaged_hint: str = DAMAGED_HINT) -> dict[str, Any]:
    """Read a checkpoint on the CPU, refusing anything that is not one of ours (``damaged_hint``: what to
    do about a file that cannot be read, as the caller knows it)."""
    path = Path(path)
    if path.is_dir():
        inside = next((p for p in (path / "checkpoints" / "best.pt", path / "best.pt") if p.is_file()), None)
        raise CheckpointError(f"{path}: a directory, not a checkpoint; give a .pt file" + (f", e.g. {inside}" if inside else " from a run's checkpoints/ folder"))
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; give a .pt file from a run's checkpoints/ folder")
    damaged = _failed_crc(path)
    if damaged is not None:
        raise CheckpointError(
            f"{path}: damaged: its part {damaged} fails the archive's CRC check (its bytes changed after it was written); {damaged_hint}"
        )
    # torch warns about the pickle protocol of files it then refuses: such a file gets one line, not two
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises several kinds for truncated, foreign or unsafe files
            text = str(exc).strip()
            detail = text.splitlines()[0].split(". ")[0] if text else type(exc).__name__  # torch's first sentence
            if "Weights only load failed" in text or "Unsupported global" in text:
                called = _unsafe_globals(path, text)
                if called:
                    raise CheckpointError(
                        f"{path}: refused as unsafe: it holds pickled Python objects that a safe load (weights_only) "
                        f"does not run ({', '.join(called)[:120]}); use a checkpoint written by mlptrain fit"
                    ) from None
                lines = [line.strip() for line in text.splitlines() if line.strip().startswith("Unsupported")]
                detail = lines[0] if lines else detail
            raise CheckpointError(
                f"{path}: not a readable mlptrain checkpoint: truncated, damaged or not a PyTorch file ({detail[:160]}); "
                f"{damaged_hint}"
            ) from None
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an mlptrain checkpoint (no '{FORMAT}' marker); give a file from checkpoints/")
    version = state.get("format_version")
    if not isinstance(version, int):
        raise CheckpointError(f"{path}: checkpoint has no valid format version ({version!r}); give a file from checkpoints/")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is newer than this mlptrain reads ({FORMAT_VERSION}); upgrade mlptrain"
        )
    return state


def _failed_crc(path: Path) -> Optional[str]:
    """The first member of a checkpoint's zip archive whose bytes do not match the CRC-32 stored with them,
    or None. torch.load does not check them, so a flipped bit in a tensor would load and score silently;
    checking costs one read of the file (torch stores members uncompressed)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip()
    except Exception:  # not a zip at all, or truncated: torch.load then says what the file is
        return None


def _unsafe_globals(path: Path, text: str) -> list[str]:
    """The Python callables a file the safe loader refused would have called ('posix.system'), read from
    torch's message or from the pickle's opcodes (parsed, never run); [] for a file that is no pickle at all."""
    found = re.findall(r"GLOBAL ([\w.]+)", text)
    if found:
        return found
    if path.stat().st_size > 64 * 2**20:
        return []
    names: list[str] = []
    strings: list[str] = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(path.read_bytes())):
            if op.name in ("GLOBAL", "INST"):
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                names.append(f"{strings[-2]}.{strings[-1]}")
            if isinstance(arg, str):
                strings.append(arg)
    except Exception:  # random bytes, a truncated stream: not a pickle, so nothing it could run
        return []
    return list(dict.fromkeys(names))
