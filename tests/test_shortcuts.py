"""The shipped model must not flip on channel cues: rate, codec, digital silence, loudness.

Real clips (tests/fixtures/real, licence-clean, see ATTRIBUTION.csv) are transformed the way telephone
systems and recorders do; the share of them flagged synthetic must not rise by more than a few points.
"""
from __future__ import annotations


import numpy as np
import pytest

from conftest import FIXTURES
from voiceguard import audio
from voiceguard.augment import codec
from voiceguard.detector import Detector

MAX_RISE = 0.09  # 3 of the 34 real clips


def _load(folder: str) -> list[np.ndarray]:
    return [audio.load(p)[0] for p in sorted((FIXTURES / folder).glob("*.flac"))]


@pytest.fixture(scope="module")
def det():
    return Detector.load(device="cpu")  # the shipped checkpoint


@pytest.fixture(scope="module")
def real():
    clips = _load("real")
    assert len(clips) >= 30
    return clips


def _flagged(det, clips) -> float:
    probs = []
    for o in det.score_arrays(clips, 16000):
        r = o.results[0]
        probs.append(0.0 if r.probability is None else r.probability)
    return float(np.mean(np.array(probs) >= det.threshold))


def _pad_zeros(x):
    z = np.zeros(16000, np.float32)
    return np.concatenate([z, x[: len(x) // 2], z[:8000], x[len(x) // 2:], z])


TRANSFORMS = {
    "resample 16-8-16 kHz": lambda x: audio.resample(audio.resample(x, 16000, 8000), 8000, 16000),
    "mu-law 8 kHz": lambda x: codec(x, "ulaw"),
    "GSM 6.10": lambda x: codec(x, "gsm"),
    "Opus": lambda x: codec(x, "opus16"),
    "MP3": lambda x: codec(x, "mp3_16"),
    "digital silence padding": _pad_zeros,
    "+12 dB": lambda x: x * min(10 ** (12 / 20), 0.99 / np.abs(x).max()),  # up to +12 dB, without clipping
    "-12 dB": lambda x: x * 10 ** (-12 / 20),
    # what call recorders do to real speech besides codecs: saturation and background noise
    "hard-clipped at +15 dB": lambda x: np.clip(x * 10 ** (15 / 20) / np.abs(x).max(), -1.0, 1.0),
    "white noise at 20 dB SNR": lambda x: x + np.random.default_rng(0).standard_normal(len(x)).astype(np.float32)
    * np.sqrt(np.mean(x ** 2) / 100.0),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_real_speech_does_not_flip_under(det, real, name):
    base = _flagged(det, real)
    moved = _flagged(det, [TRANSFORMS[name](x).astype(np.float32) for x in real])
    assert moved - base <= MAX_RISE, f"{name}: {base:.0%} of real clips flagged before, {moved:.0%} after"
