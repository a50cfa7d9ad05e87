"""Speech activity: which 30 ms frames hold speech, and which windows really are speech.

Two stages. WebRTC's VAD (``webrtcvad-wheels``, C code, microseconds per frame) decides on voiced frames; an
absolute energy gate on top throws away digital silence and near-silence, which the WebRTC VAD sometimes
accepts. Scoring only speech keeps the detector from learning shortcuts in pauses (TTS pauses are exact zeros).

The WebRTC VAD also takes ring-back tones, DTMF key tones and music on hold for speech, and the detector
scores such windows as synthetic. So each window the first stage passes is checked by Silero VAD
(``silero-vad``, a small neural VAD trained to reject tones, music and noise, its weights inside the wheel):
:class:`SpeechCheck` gives the share of 32 ms frames it calls speech in the loudest half of the window.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FRAME_SECONDS = 0.03  # s per VAD decision (WebRTC accepts 10, 20 or 30 ms)


@dataclass(frozen=True)
class VadConfig:
    aggressiveness: int = 2  # 0 (keeps most) .. 3 (keeps least), WebRTC's mode
    energy_floor_db: float = -55.0  # dBFS; quieter frames are never speech
    neural: bool = True  # second stage: Silero VAD checks each window the first stage passes
    neural_threshold: float = 0.5  # Silero speech probability at and above which a 32 ms frame is speech
    neural_min_share: float = 0.1  # a window is scored only if Silero calls at least this share of it speech

    def to_dict(self) -> dict:
        return {"aggressiveness": self.aggressiveness, "energy_floor_db": self.energy_floor_db,
                "neural": self.neural, "neural_threshold": self.neural_threshold,
                "neural_min_share": self.neural_min_share}


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


class SpeechCheck:
    """Silero VAD on the loudest half of each window: the share of its 32 ms frames there called speech.

    Each window is cut into segments of ``segment_seconds``; the loudest ones, ``check_seconds`` in all, are
    checked (tones and music are alike throughout a window, and a window of speech is speech where it is
    loudest). Each checked segment runs through the network at 8 kHz, the telephone band, from a fresh state,
    so the segments of all the windows go through it as one batch. Checking half of each window, and
    :meth:`passes` stopping early, keep this stage at about 30 % of the scoring time (README, "Speed").

    Examples
    --------
    >>> check = SpeechCheck()
    >>> check(np.zeros((2, 64000), np.float32))  # share of speech in two 4 s windows of silence at 16 kHz
    array([0., 0.])
    """

    def __init__(self, threshold: float = 0.5, *, segment_seconds: float = 0.5, check_seconds: float = 2.0,
                 sample_rate: int = 16_000, rate: int = 8000) -> None:
        if rate not in (8000, 16000):
            raise ValueError(f"Silero VAD runs at 8 or 16 kHz, got {rate}")
        self.threshold = float(threshold)
        self.sample_rate, self.rate = int(sample_rate), int(rate)
        self.frame = rate // 1000 * 32  # samples per Silero decision (32 ms)
        self.steps = max(1, int(segment_seconds * rate) // self.frame)  # frames per segment
        self.n_check = max(1, int(round(check_seconds / segment_seconds)))
        self._model = _silero()

    def _loudest_segments(self, windows: np.ndarray) -> np.ndarray:
        """[B, n] at ``sample_rate`` -> the loudest segments, loudest first [B, m, steps, frame] at ``rate``."""
        from .audio import resample

        x = np.asarray(windows, dtype=np.float32)
        b, n = x.shape
        seg = self.steps * self.frame * self.sample_rate // self.rate  # segment length at the input rate
        k = n // seg
        if k == 0:  # a window shorter than one segment: as many whole frames as it holds
            y = resample(x, self.sample_rate, self.rate)
            steps = y.shape[1] // self.frame
            if steps == 0:
                raise ValueError(f"windows of {n} samples at {self.sample_rate} Hz hold no 32 ms frame")
            return np.ascontiguousarray(y[:, : steps * self.frame]).reshape(b, 1, steps, self.frame)
        segs = x[:, : k * seg].reshape(b, k, seg)
        m = min(self.n_check, k)
        loud = np.argsort(-np.einsum("bks,bks->bk", segs, segs), axis=1, kind="stable")[:, :m]
        picked = np.take_along_axis(segs, loud[:, :, None], axis=1).reshape(b * m, seg)
        y = resample(picked, self.sample_rate, self.rate)[:, : self.steps * self.frame]
        return np.ascontiguousarray(y).reshape(b, m, self.steps, self.frame)

    def _speech_frames(self, segments: np.ndarray) -> np.ndarray:
        """[S, steps, frame] -> frames called speech per segment [S], each segment from a fresh state."""
        import torch

        x = torch.from_numpy(np.ascontiguousarray(segments))
        speech = torch.zeros(len(x), dtype=torch.int64)
        with torch.inference_mode():
            self._model.reset_states()
            for s in range(x.shape[1]):
                speech += (self._model(x[:, s], self.rate)[:, 0] >= self.threshold).long()
        return speech.numpy()

    def __call__(self, windows: np.ndarray) -> np.ndarray:
        """Share of the checked 32 ms frames of each window called speech.

        Parameters
        ----------
        windows : np.ndarray [shape=(B, n), dtype=float32] at ``sample_rate``, at least 32 ms long

        Returns
        -------
        np.ndarray [shape=(B,), dtype=float64] in [0, 1]
        """
        segs = self._loudest_segments(windows)
        b, m, steps, frame = segs.shape
        return self._speech_frames(segs.reshape(b * m, steps, frame)).reshape(b, m).sum(1) / float(m * steps)

    def passes(self, windows: np.ndarray, min_share: float) -> np.ndarray:
        """``self(windows) >= min_share``, the same decisions at a fraction of the cost.

        Segments go through the network loudest first, one at a time across the windows still open; a window
        leaves as soon as its speech frames reach ``min_share`` of all its checked frames, or can no longer.
        Most windows of speech are settled by their loudest half second.

        Returns
        -------
        np.ndarray [shape=(B,), dtype=bool]
        """
        segs = self._loudest_segments(windows)
        b, m, steps, _ = segs.shape
        need = min_share * m * steps
        count = np.zeros(b, dtype=np.int64)
        open_ = np.ones(b, dtype=bool)
        for j in range(m):
            idx = np.flatnonzero(open_)
            if len(idx) == 0:
                break
            count[idx] += self._speech_frames(segs[idx, j])
            open_[idx] = (count[idx] < need) & (count[idx] + (m - j - 1) * steps >= need)
        return count >= need


def _silero():
    """A fresh Silero VAD network (the TorchScript file inside the ``silero-vad`` wheel; it keeps its recurrent
    state between calls, so each :class:`SpeechCheck` has its own)."""
    import warnings

    import torch

    threads = torch.get_num_threads()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit.load's deprecation notice
            from silero_vad import load_silero_vad  # importing it sets torch to one thread: restored below

            return load_silero_vad()
    finally:
        torch.set_num_threads(threads)
