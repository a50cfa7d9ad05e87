"""One exception family for everything VoiceGuard reports to a user.

Every message names what was received and, where it helps, what to do.
The CLI prints ``str(err)`` on one line; library code never calls ``sys.exit``.
"""
from __future__ import annotations


class VoiceGuardError(Exception):
    """Base class of all errors VoiceGuard raises on purpose."""

    #: short machine-readable kind, used in batch summaries ("missing", "not-audio", ...)
    kind: str = "error"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind


class AudioLoadError(VoiceGuardError):
    """The file could not be read as audio (missing, unreadable, not audio, empty, ...)."""

    kind = "unreadable"


class CheckpointError(VoiceGuardError):
    """A checkpoint is missing, malformed or from an incompatible version."""

    kind = "checkpoint"


class DataError(VoiceGuardError):
    """A data set, manifest or protocol file could not be used."""

    kind = "data"
