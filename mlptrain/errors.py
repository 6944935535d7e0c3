"""The tool's own errors: each kind carries the exit code the CLI returns.

Library code raises these with a message that names the file, key or value and what to do;
only ``cli.py`` prints them (one line, no traceback) and exits.
"""

from __future__ import annotations

from pathlib import Path


def files_in(folder: Path, suffixes: tuple[str, ...]) -> str:
    """' (it holds a.csv, b.csv, ...)': for a message about a directory given where one of its files belongs."""
    import itertools

    names = sorted(p.name for p in itertools.islice(folder.iterdir(), 10000) if p.suffix.lower() in suffixes)
    return f" (it holds {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})" if names else ""


class MlptrainError(Exception):
    """Base of every error a user can cause; the message is meant to be read by that user."""

    exit_code = 1


class ConfigError(MlptrainError):
    """A spec that does not validate (unknown key, wrong type, bad value, bad override)."""

    exit_code = 2


class DataError(MlptrainError):
    """Data that cannot be read or does not fit the spec."""

    exit_code = 3


class CheckpointError(MlptrainError):
    """A checkpoint that is missing, unreadable or of another format."""

    exit_code = 4


class RunDirError(MlptrainError):
    """A run directory that exists already or cannot be written."""

    exit_code = 5


class TrainingError(MlptrainError):
    """Training that cannot go on: the loss became NaN or infinite."""

    exit_code = 6


class Interrupted(MlptrainError):
    """Training stopped by SIGINT/SIGTERM after saving last.pt; exits with 128 + the signal (130, 143)."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum


class Notice(UserWarning):
    """Something the user should know that does not stop the command; ``cli`` prints each as one
    ``warning: ...`` line. Library code warns with a subclass."""


class DataWarning(Notice):
    """About the data (dropped rows, categories unseen in training). ``split`` names the split it is
    about (train/val/test), if any."""

    def __init__(self, message: str, split: str | None = None):
        super().__init__(message)
        self.split = split


class CheckpointWarning(Notice):
    """About a checkpoint (it does not match the SHA-256 its run recorded)."""


class ConfigWarning(Notice):
    """About the config (a key that a ``--set`` made inert)."""
