"""Audio loading: every format a call recorder writes, any rate, channels, bad input."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import soundfile as sf

from conftest import speech_like, write
from voiceguard import audio
from voiceguard.errors import AudioLoadError

FORMATS = [  # (suffix, rate, soundfile kwargs)
    ("wav", 16000, {"subtype": "PCM_16"}),
    ("wav", 44100, {"subtype": "FLOAT"}),
    ("flac", 48000, {}),
    ("ogg", 16000, {"format": "OGG", "subtype": "VORBIS"}),
    ("opus", 16000, {"format": "OGG", "subtype": "OPUS"}),
    ("mp3", 22050, {"format": "MP3", "subtype": "MPEG_LAYER_III"}),
    ("wav", 8000, {"subtype": "ULAW"}),
    ("wav", 8000, {"subtype": "ALAW"}),
    ("wav", 8000, {"subtype": "GSM610"}),
]


@pytest.mark.parametrize("suffix,rate,kw", FORMATS, ids=[f"{s}-{r}-{k.get('subtype', 'default')}" for s, r, k in FORMATS])
def test_formats_decode_to_16k(tmp_path, suffix, rate, kw):
    x = speech_like(3.0, rate)
    p = write(tmp_path / f"a.{suffix}", x, rate, **kw)
    y = audio.load(p)
    assert y.shape[0] == 1 and y.dtype == np.float32
    assert abs(y.shape[1] - 3.0 * 16000) < 0.1 * 16000  # codecs may pad a frame or two
    assert 0.05 < np.abs(y).max() <= 1.0
    # the decoded signal follows the original's envelope (not noise, not silence)
    ref = audio.resample(x, rate, 16000)
    n = min(len(ref), y.shape[1]) // 800 * 800
    e1 = np.abs(ref[:n]).reshape(-1, 800).mean(1)
    e2 = np.abs(y[0, :n]).reshape(-1, 800).mean(1)
    assert np.corrcoef(e1, e2)[0, 1] > 0.8


def test_stereo_mix_and_each(tmp_path):
    a, b = speech_like(2.0, seed=1), speech_like(2.0, seed=2) * 0.5
    p = write(tmp_path / "st.wav", np.stack([a, b], axis=1), 16000)
    mixed = audio.load(p)
    each = audio.load(p, channels="each")
    assert mixed.shape == (1, 32000) and each.shape == (2, 32000)
    np.testing.assert_allclose(each[0], a, atol=1e-4)
    np.testing.assert_allclose(mixed[0], (a + b) / 2, atol=1e-4)


def test_blocks_are_bounded_and_complete(tmp_path):
    x = speech_like(65.0, 44100, seed=3)
    p = write(tmp_path / "long.flac", x, 44100)
    blocks = list(audio.iter_blocks(p, block_seconds=10.0))
    assert max(b.shape[1] for b in blocks) <= 10.0 * 16000 + 1000
    total = sum(b.shape[1] for b in blocks)
    assert abs(total - 65 * 16000) <= 2
    whole = audio.resample(x, 44100, 16000)
    np.testing.assert_allclose(np.concatenate(blocks, axis=1)[0, : len(whole)], whole[: total], atol=2e-3)


@pytest.mark.parametrize("case", ["missing", "directory", "empty", "text", "garbage", "zero-frames", "truncated",
                                  "low-rate", "nan"])
def test_bad_input_raises_one_clear_error(tmp_path, case):
    p = tmp_path / "bad.wav"
    if case == "missing":
        p = tmp_path / "nope.wav"
    elif case == "directory":
        p = tmp_path / "dir.wav"
        p.mkdir()
    elif case == "empty":
        p.write_bytes(b"")
    elif case == "text":
        p.write_text("this is not audio\n" * 50)
    elif case == "garbage":
        p.write_bytes(os.urandom(5000))
    elif case == "zero-frames":
        sf.write(str(p), np.zeros(0, np.float32), 16000)
    elif case == "truncated":
        sf.write(str(p), speech_like(2.0), 16000)
        p.write_bytes(p.read_bytes()[:30])
    elif case == "low-rate":
        sf.write(str(p), speech_like(2.0, 4000), 4000)
    elif case == "nan":
        x = speech_like(1.0)
        x[100] = np.nan
        sf.write(str(p), x, 16000, subtype="FLOAT")
    with pytest.raises(AudioLoadError) as err:
        audio.load(p)
    msg = str(err.value)
    assert str(p.name) in msg and "\n" not in msg
    assert err.value.kind in {"missing", "not-audio", "empty", "corrupt", "bad-rate", "unreadable"}


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_ffmpeg_container(tmp_path):
    import subprocess

    src = write(tmp_path / "a.wav", speech_like(2.0), 16000)
    m4a = tmp_path / "a.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), str(m4a)], check=True)
    y = audio.load(m4a)
    assert abs(y.shape[1] - 32000) < 3000 and np.abs(y).max() > 0.05


def test_ffmpeg_missing_is_named(tmp_path, monkeypatch):
    p = tmp_path / "call.amr"
    p.write_bytes(b"#!AMR\n" + os.urandom(200))
    monkeypatch.setattr(audio, "has_ffmpeg", lambda: False)
    with pytest.raises(AudioLoadError, match="ffmpeg"):
        audio.load(p)
