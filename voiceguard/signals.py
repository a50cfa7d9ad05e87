"""Telephone call-progress tones and music on hold: what call recordings hold besides speech.

For checks of the speech detection (``tests/test_vad.py``, ``scripts/field_checks.py``): none of this is
speech, so none of it may be scored. All signals are float32 at 16 kHz.
"""
from __future__ import annotations

import numpy as np

SR = 16000


def _t(seconds: float) -> np.ndarray:
    return np.arange(int(seconds * SR)) / SR


def ringback(seconds: float) -> np.ndarray:
    """North-American ring-back: 440 + 480 Hz, 2 s on, 4 s off."""
    t = _t(seconds)
    return (0.15 * (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 480 * t)) * ((t % 6) < 2)).astype(np.float32)


def busy(seconds: float) -> np.ndarray:
    """Busy tone: 480 + 620 Hz, 0.5 s on, 0.5 s off."""
    t = _t(seconds)
    return (0.15 * (np.sin(2 * np.pi * 480 * t) + np.sin(2 * np.pi * 620 * t)) * ((t % 1) < 0.5)).astype(np.float32)


def dtmf(seconds: float, seed: int = 0) -> np.ndarray:
    """Random key presses: 150 ms dual tones, 100 ms gaps."""
    rng = np.random.default_rng(seed)
    low, high = [697, 770, 852, 941], [1209, 1336, 1477]
    t = _t(0.15)
    keys = []
    while sum(map(len, keys)) < seconds * SR:
        a, b = rng.choice(low), rng.choice(high)
        keys += [0.12 * (np.sin(2 * np.pi * a * t) + np.sin(2 * np.pi * b * t)), np.zeros(int(0.1 * SR))]
    return np.concatenate(keys)[: int(seconds * SR)].astype(np.float32)


def hold_music(seconds: float, seed: int = 0) -> np.ndarray:
    """A plucked melody over a bass line, harmonic notes of 0.4 s."""
    rng = np.random.default_rng(seed)
    notes = [261.6, 293.7, 329.6, 349.2, 392.0, 440.0, 493.9, 523.3]
    step = int(0.4 * SR)
    tt = np.arange(step) / SR
    env = np.exp(-3 * tt)
    out = []
    for _ in range(int(seconds * SR) // step):
        f, g = rng.choice(notes), rng.choice(notes) / 2
        note = sum(env * np.sin(2 * np.pi * f * h * tt) / h for h in range(1, 8))
        note += sum(0.5 * env * np.sin(2 * np.pi * g * h * tt) / h for h in range(1, 5))
        out.append(note)
    x = np.concatenate(out)
    return (0.2 * x / np.abs(x).max()).astype(np.float32)
