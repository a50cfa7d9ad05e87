"""VoiceGuard: tell whether the voice in a call recording is human or AI-synthesised.

>>> from voiceguard import Detector
>>> result = Detector.load().score_file("call.wav")
>>> result.verdict, result.probability
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Detector", "ScoreResult", "Segment", "VoiceGuardError", "AudioLoadError", "CheckpointError",
           "DataError", "__version__"]

from .errors import AudioLoadError, CheckpointError, DataError, VoiceGuardError


def __getattr__(name: str):  # keep `import voiceguard` (and `voiceguard --help`) free of torch
    if name in ("Detector", "ScoreResult", "Segment"):
        from . import detector

        return getattr(detector, name)
    raise AttributeError(f"module 'voiceguard' has no attribute {name!r}")
