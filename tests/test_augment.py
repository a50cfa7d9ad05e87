"""Augmentation keeps length and range, and really changes the channel."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import speech_like
from voiceguard import augment


@pytest.fixture(scope="module")
def x():
    return speech_like(3.0, seed=3)


@pytest.mark.parametrize("name", list(augment.CODECS) + ["amr"])
def test_codecs_keep_length_and_range(x, name):
    y = augment.codec(x, name)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert np.corrcoef(np.abs(x[::160]), np.abs(y[::160]))[0, 1] > 0.3  # still the same speech
    assert not np.allclose(x, y, atol=1e-3)  # but coded


def test_telephone_copy_removes_the_upper_band(x):
    y = augment.telephone_copy(x, "gsm")
    spec_x, spec_y = np.abs(np.fft.rfft(x)), np.abs(np.fft.rfft(y))
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    hi = f > 4500
    assert spec_y[hi].sum() / spec_y.sum() < 0.02 < spec_x[hi].sum() / spec_x.sum()


def test_transforms_keep_length_and_range(x):
    rng = np.random.default_rng(0)
    for y in (augment.add_noise(x, 10, rng), augment.reverb(x, 0.5, rng), augment.band_limit(x, 300, 3400),
              augment.dither(x, -70, rng), augment.insert_silence(x, rng), augment.gain_to_rms(x, -30)):
        assert y.shape == x.shape and np.isfinite(y).all() and np.abs(y).max() <= 1.0 + 1e-3


def test_noise_snr_is_as_asked(x):
    rng = np.random.default_rng(1)
    y = augment.add_noise(x, 20.0, rng)
    snr = 10 * np.log10(np.mean(x**2) / np.mean((y - x) ** 2))
    assert snr == pytest.approx(20.0, abs=0.5)


def test_augmenter_is_label_blind_and_removes_digital_silence(x):
    a = augment.Augmenter(seed=0)
    z = x.copy()
    z[:8000] = 0.0  # a TTS-style exact-zero pause
    outs = [a(z) for _ in range(30)]
    for y in outs:
        assert y.shape == z.shape and np.abs(y).max() <= 1.0
        assert np.count_nonzero(y[:8000] == 0.0) < 50  # dither fills exact zeros
    levels = [10 * np.log10(np.mean(y**2)) for y in outs]
    assert max(levels) - min(levels) > 8  # loudness varies


def test_rawboost_keeps_length_and_peak_and_distorts(x):
    rng = np.random.default_rng(4)
    for _ in range(12):  # covers all four RawBoost variants
        y = augment.rawboost(x, rng)
        assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
        assert np.abs(y).max() == pytest.approx(np.abs(x).max(), rel=1e-3)
        assert not np.allclose(x, y, atol=1e-3)
        assert np.corrcoef(np.abs(x[::160]), np.abs(y[::160]))[0, 1] > 0.2  # still the same speech


def test_music_under_speech_is_harmonic_at_the_asked_snr_and_label_blind(x):
    rng = np.random.default_rng(5)
    m = augment.background_music(16000 * 4, rng)
    assert m.shape == (64000,) and m.dtype == np.float32 and np.isfinite(m).all()
    assert np.sqrt(np.mean(m.astype(np.float64) ** 2)) == pytest.approx(1.0, abs=1e-3)
    spec = np.abs(np.fft.rfft(m)) ** 2  # tonal: the 2 % strongest bins hold most of the energy
    assert np.sort(spec)[-len(spec) // 50:].sum() / spec.sum() > 0.5
    y = augment.add_music(x, 10.0, rng)
    assert y.shape == x.shape and y.dtype == np.float32
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((y - x).astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.3)
    a = augment.Augmenter(augment.AugmentConfig(p_music=1.0), seed=0)
    outs = [a(x) for _ in range(5)]
    assert all(o.shape == x.shape and np.abs(o).max() <= 1.0 for o in outs) and 1 <= len(a._music) <= 5


def test_telephone_codec_weights_set_how_often_each_codec_is_drawn(x, monkeypatch):
    """`telephone_weights` (train_default.py --telephone-weights gsm=3 ...) makes the telephone branch draw some
    codecs more often than others; a codec weighted 0 is never drawn, and an unknown one is refused."""
    drawn = []

    def fake_codec(y, name, sr=16000, **kw):
        drawn.append(name)
        return y

    monkeypatch.setattr(augment, "codec", fake_codec)
    zero = {c: 0.0 for c in augment.NARROWBAND_CODECS}
    cfg = augment.AugmentConfig(p_telephone=1.0, telephone_weights=tuple({**zero, "gsm": 3, "ulaw": 1}.items()))
    aug = augment.Augmenter(cfg, seed=0)
    for _ in range(400):
        aug(x[:8000])
    assert set(drawn) == {"gsm", "ulaw"}
    assert 0.68 < drawn.count("gsm") / len(drawn) < 0.82  # 3 : 1

    drawn.clear()  # no weights: every codec alike, as before the option
    aug = augment.Augmenter(augment.AugmentConfig(p_telephone=1.0), seed=0)
    for _ in range(400):
        aug(x[:8000])
    assert set(augment.TELEPHONE_CODECS) <= set(drawn)
    assert drawn.count("gsm") / len(drawn) < 0.25

    with pytest.raises(ValueError, match="gsm610"):
        augment.AugmentConfig(telephone_weights=(("gsm610", 2.0),))
    with pytest.raises(ValueError):
        augment.AugmentConfig(telephone_weights=tuple(zero.items()))  # nothing left to draw


def test_a_forced_channel_changes_only_the_channel(x):
    """augmenter(x, channel=...): with the same seed, the "none" and "telephone" views share every other random
    choice (noise, music, reverb, silence), and only the telephone one loses the band above 4 kHz, even where the
    config never draws a telephone channel."""
    from dataclasses import replace

    cfg = replace(augment.AugmentConfig(), p_telephone=0.0, p_noise=1.0, p_music=1.0, p_silence=0.0, p_reverb=0.0)
    aug = augment.Augmenter(cfg, seed=0)  # one augmenter, as in training: music made for the first view is kept
    views = {}
    for channel in ("none", "telephone"):
        aug.rng = np.random.default_rng(11)
        views[channel] = aug(x, channel=channel)
    clean, tel = views["none"], views["telephone"]
    assert clean.shape == tel.shape == x.shape
    f = np.fft.rfftfreq(len(x), 1 / 16000)
    high = lambda y: (np.abs(np.fft.rfft(y))[f > 4500] ** 2).sum() / (np.abs(np.fft.rfft(y)) ** 2).sum()
    assert high(tel) < 0.1 * high(clean), (high(tel), high(clean))
    # the same noise under both: their telephone-band content is still alike
    band = lambda y: augment.band_limit(y, 300.0, 3400.0, 16000)
    assert np.corrcoef(band(clean), band(tel))[0, 1] > 0.9
    with pytest.raises(ValueError, match="channel"):
        augment.Augmenter(cfg, seed=1)(x, channel="gsm")


def test_wideband_codecs_are_the_ones_asked_for(x, monkeypatch):
    """`wideband_codecs` (train_default.py --wideband-codecs vorbis16 mp3_16 opus16) sets which codecs the wideband
    branch draws; by default Opus is not among them, and narrowband or unknown names are refused."""
    drawn = []

    def fake_codec(y, name, sr=16000, **kw):
        drawn.append(name)
        return y

    monkeypatch.setattr(augment, "codec", fake_codec)
    only_wide = dict(p_telephone=0.0, p_wideband_codec=1.0, p_band_limit=0.0)
    for codecs in (augment.AugmentConfig.wideband_codecs, ("vorbis16", "mp3_16", "opus16")):
        drawn.clear()
        aug = augment.Augmenter(augment.AugmentConfig(**only_wide, wideband_codecs=codecs), seed=0)
        for _ in range(90):
            aug(x[:8000])
        assert set(drawn) == set(codecs)
    assert "opus16" not in augment.AugmentConfig().wideband_codecs
    for bad in (("gsm",), ("flac",), ()):
        with pytest.raises(ValueError, match="wideband codecs"):
            augment.AugmentConfig(wideband_codecs=bad)
