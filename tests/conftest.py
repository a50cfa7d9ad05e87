"""Shared fixtures: speech-like audio made on the fly, espeak-ng speech, and a random-weight checkpoint."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def speech_like(seconds: float, sr: int = 16000, seed: int = 0, f0: float = 140.0, pauses: bool = True) -> np.ndarray:
    """A voiced, syllable-modulated harmonic signal with pauses and a noise floor [shape=(n,)], float32."""
    rng = np.random.default_rng(seed)
    n = int(seconds * sr)
    t = np.arange(n) / sr
    pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t + rng.uniform(0, 6)))
    phase = 2 * np.pi * np.cumsum(pitch) / sr
    x = sum((0.6 / k) * np.sin(k * phase) for k in range(1, 12))
    syll = np.clip(np.sin(2 * np.pi * 4.0 * t + rng.uniform(0, 6)), 0, None) ** 0.7
    words = (np.sin(2 * np.pi * 0.35 * t + rng.uniform(0, 6)) > -0.6).astype(float) if pauses else 1.0
    y = x * syll * words + 0.003 * rng.standard_normal(n)
    return (0.3 * y / np.abs(y).max()).astype(np.float32)


@pytest.fixture(scope="session")
def untrained_checkpoint(tmp_path_factory) -> Path:
    """A checkpoint with random weights (tests only): returns the .safetensors path."""
    from voiceguard import checkpoint
    from voiceguard.detector import Detector

    d = Detector.untrained()
    return checkpoint.save(tmp_path_factory.mktemp("ckpt") / "untrained", d.model, d.config)


@pytest.fixture(scope="session")
def espeak_wav(tmp_path_factory) -> Path:
    """Real synthetic speech from espeak-ng (installed by `make setup`), 22.05 kHz WAV, ~6 s."""
    exe = shutil.which("espeak-ng")
    assert exe, "espeak-ng is required for the tests (make setup installs it)"
    out = tmp_path_factory.mktemp("espeak") / "espeak.wav"
    subprocess.run([exe, "-w", str(out), "Hello, this is your bank calling about a suspicious payment "
                                          "on your account. Please confirm your code."], check=True)
    return out


def run_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``python -m voiceguard ARGS`` in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "voiceguard", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


def write(path: Path, x: np.ndarray, sr: int, **kw) -> Path:
    sf.write(str(path), x, sr, **kw)
    return path
