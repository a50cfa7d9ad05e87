"""Speech activity: which 30 ms frames hold speech.

WebRTC's VAD (``webrtcvad-wheels``, C code, microseconds per frame) decides on voiced frames; an absolute
energy gate on top throws away digital silence and near-silence, which the WebRTC VAD sometimes accepts.
Scoring only speech keeps the detector from learning shortcuts in pauses (TTS pauses are exact zeros).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAME_SECONDS = 0.03  # s per VAD decision (WebRTC accepts 10, 20 or 30 ms)


@dataclass(frozen=True)
class VadConfig:
    aggressiveness: int = 2  # 0 (keeps most) .. 3 (keeps least), WebRTC's mode
    energy_floor_db: float = -55.0  # dBFS; quieter frames are never speech

    def to_dict(self) -> dict:
        return {"aggressiveness": self.aggressiveness, "energy_floor_db": self.energy_floor_db}


def frame_length(sample_rate: int) -> int:
    """Samples in one VAD frame at ``sample_rate``."""
    return int(round(FRAME_SECONDS * sample_rate))


class SpeechDetector:
    """Frame-level speech decisions for a mono signal at 8, 16, 32 or 48 kHz."""

    def __init__(self, config: VadConfig = VadConfig(), sample_rate: int = 16_000) -> None:
        import webrtcvad

        if sample_rate not in (8000, 16000, 32000, 48000):
            raise ValueError(f"VAD works at 8/16/32/48 kHz, got {sample_rate} Hz")
        self.config = config
        self.sample_rate = sample_rate
        self.frame = frame_length(sample_rate)
        self._vad = webrtcvad.Vad(int(config.aggressiveness))
        self._floor = 10.0 ** (config.energy_floor_db / 20.0)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        """Decide every complete frame of ``samples``.

        Parameters
        ----------
        samples : np.ndarray [shape=(n,), dtype=float32], in [-1, 1]

        Returns
        -------
        np.ndarray [shape=(n // frame,), dtype=bool]
        """
        n = len(samples) // self.frame
        if n == 0:
            return np.zeros(0, dtype=bool)
        x = np.asarray(samples[: n * self.frame], dtype=np.float32).reshape(n, self.frame)
        rms = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1))
        loud = rms > self._floor
        pcm = (np.clip(x, -1.0, 1.0) * 32767.0).astype("<i2")
        out = np.zeros(n, dtype=bool)
        is_speech = self._vad.is_speech
        rate = self.sample_rate
        for i in np.flatnonzero(loud):
            out[i] = is_speech(pcm[i].tobytes(), rate)
        return out


def speech_mask(samples: np.ndarray, sample_rate: int = 16_000, config: VadConfig = VadConfig()) -> np.ndarray:
    """Per-sample speech mask (frame decisions spread to samples; a ragged tail counts as non-speech).

    Returns
    -------
    np.ndarray [shape=(n,), dtype=bool]
    """
    det = SpeechDetector(config, sample_rate)
    flags = det(samples)
    mask = np.zeros(len(samples), dtype=bool)
    mask[: len(flags) * det.frame] = np.repeat(flags, det.frame)
    return mask
