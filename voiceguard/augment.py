"""Augmentation: the same random channel for real and fake speech, so the label cannot hide in the channel.

Each transform takes and returns a mono float32 signal at 16 kHz [shape=(n,)] of the same length, in [-1, 1].
:class:`Augmenter` draws a random chain per example: level, silence (digital zeros), reverberation,
(optionally) music under the speech, additive noise, band-limiting, telephone or wideband codecs, dither. Its
probabilities do not depend on the label, which neutralises the shortcuts of the training corpus: bandwidth
(8 kHz sources only on the real side), codec, digital silence in TTS output, loudness, and leading/trailing
silence.
"""
from __future__ import annotations

import io
import logging
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .audio import SAMPLE_RATE, resample

log = logging.getLogger(__name__)

#: codecs soundfile encodes and decodes in memory: name -> (container format, subtype, sample rate Hz)
CODECS: dict[str, tuple[str, str, int]] = {
    "ulaw": ("WAV", "ULAW", 8000),
    "alaw": ("WAV", "ALAW", 8000),
    "gsm": ("WAV", "GSM610", 8000),
    "g721": ("AU", "G721_32", 8000),
    "opus8": ("OGG", "OPUS", 8000),
    "mp3_8": ("MP3", "MPEG_LAYER_III", 8000),
    "opus16": ("OGG", "OPUS", 16000),
    "vorbis16": ("OGG", "VORBIS", 16000),
    "mp3_16": ("MP3", "MPEG_LAYER_III", 16000),
}
MUSIC_BANK, MUSIC_SECONDS = 48, 20.0  # pieces of background music an Augmenter makes, and their length
TELEPHONE_CODECS = ("ulaw", "alaw", "gsm", "g721", "opus8", "mp3_8")
NARROWBAND_CODECS = TELEPHONE_CODECS + ("amr",)  # and AMR-NB, through sox when it is installed
WIDEBAND_CODECS = ("vorbis16", "mp3_16")  # opus16 is 10x slower to encode here; used in tests


def fit_length(y: np.ndarray, n: int) -> np.ndarray:
    """Trim or zero-pad to exactly n samples (codecs add or drop a few)."""
    if len(y) >= n:
        return y[:n]
    return np.concatenate([y, np.zeros(n - len(y), np.float32)])


def gain_to_rms(x: np.ndarray, rms_db: float) -> np.ndarray:
    """Scale to an RMS level in dBFS (peaks clipped to +-1)."""
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    if rms < 1e-8:
        return x
    return np.clip(x * (10 ** (rms_db / 20) / rms), -1.0, 1.0).astype(np.float32)


def codec(x: np.ndarray, name: str, sr: int = SAMPLE_RATE, *, bitrate: float | None = None) -> np.ndarray:
    """Encode and decode through a codec in memory (at the codec's rate), back to ``sr`` and length.

    ``name`` is a key of :data:`CODECS`, or ``"amr"`` (AMR-NB through the ``sox`` program).
    ``bitrate`` in [0, 1] sets the compression level for Opus/Vorbis/MP3 (1 = most compressed).
    """
    if name == "amr":
        return amr(x, sr)
    import soundfile as sf

    fmt, subtype, rate = CODECS[name]
    y = resample(x, sr, rate) if rate != sr else x
    buf = io.BytesIO()
    kwargs = {}
    if bitrate is not None and subtype in ("OPUS", "VORBIS", "MPEG_LAYER_III"):
        kwargs["compression_level"] = float(bitrate)
    sf.write(buf, np.clip(y, -1, 1), rate, format=fmt, subtype=subtype, **kwargs)
    buf.seek(0)
    z, _ = sf.read(buf, dtype="float32")
    z = resample(z, rate, sr) if rate != sr else z
    return fit_length(np.asarray(z, np.float32), len(x))


def amr(x: np.ndarray, sr: int = SAMPLE_RATE) -> np.ndarray:
    """AMR-NB round trip through ``sox`` (skipped with a warning when sox lacks AMR support)."""
    import soundfile as sf

    if shutil.which("sox") is None:
        raise RuntimeError("AMR-NB needs the sox program (apt-get install sox libsox-fmt-all)")
    with tempfile.TemporaryDirectory() as d:
        src, enc, dec = Path(d, "in.wav"), Path(d, "x.amr-nb"), Path(d, "out.wav")
        sf.write(src, np.clip(resample(x, sr, 8000), -1, 1), 8000, subtype="PCM_16")
        subprocess.run(["sox", str(src), "-C", "7", str(enc)], check=True, capture_output=True)
        subprocess.run(["sox", str(enc), "-r", "8000", str(dec)], check=True, capture_output=True)
        z, _ = sf.read(dec, dtype="float32")
    return fit_length(resample(z, 8000, sr), len(x))


def band_limit(x: np.ndarray, low_hz: float, high_hz: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Butterworth band-pass (4th order, zero phase)."""
    from scipy.signal import butter, sosfiltfilt

    nyq = sr / 2
    high = min(high_hz, nyq * 0.98)
    sos = butter(4, [max(low_hz, 1.0) / nyq, high / nyq], btype="band", output="sos")
    return sosfiltfilt(sos, x).astype(np.float32)


def coloured_noise(n: int, rng: np.random.Generator, exponent: float) -> np.ndarray:
    """Noise with a 1/f**exponent power spectrum (0 white, 1 pink, 2 brown), unit RMS."""
    spec = rng.standard_normal(n // 2 + 1) + 1j * rng.standard_normal(n // 2 + 1)
    f = np.arange(n // 2 + 1, dtype=np.float64)
    f[0] = 1.0
    y = np.fft.irfft(spec / f ** (exponent / 2), n)
    return (y / (np.sqrt(np.mean(y**2)) + 1e-12)).astype(np.float32)


def _add_under(x: np.ndarray, snr_db: float, make: Callable[[], np.ndarray]) -> np.ndarray:
    """``x`` plus ``make()`` (a unit-RMS signal of its length, made only when ``x`` is not silent) ``snr_db``
    below ``x``'s RMS."""
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    if rms < 1e-8:
        return x
    return (x + make() * rms * 10 ** (-snr_db / 20)).astype(np.float32)


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator, exponent: float = 1.0) -> np.ndarray:
    """Additive coloured noise at ``snr_db`` relative to the signal's RMS."""
    return _add_under(x, snr_db, lambda: coloured_noise(len(x), rng, exponent))


def background_music(n: int, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """``n`` samples of random instrumental music, unit RMS: a chord pad (slow attack, vibrato), a plucked
    melody on the beat, a bass line and, half the time, drums (kick and hi-hat); tempo, key, timbres (number
    and tilt of the harmonics) and the mix are drawn at random."""
    t = np.arange(n) / sr
    beat = int(sr * rng.uniform(0.25, 0.7))
    root = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    scale = np.array([0, 2, 4, 5, 7, 9, 11] if rng.random() < 0.6 else [0, 2, 3, 5, 7, 8, 10])

    def tone(f0: np.ndarray, m: int, tilt: float) -> np.ndarray:  # harmonics of f0 (per sample), as k**-tilt
        phase = 2 * np.pi * np.cumsum(f0) / sr
        return sum(np.sin(k * phase + rng.uniform(0, 6)) / k ** tilt for k in range(1, m + 1)
                   if k * f0.max() < sr / 2)

    out = np.zeros(n)
    chord_len = beat * int(rng.choice([2, 4]))
    for a in range(0, n, chord_len):  # chord pad
        tt = t[a: a + chord_len] - t[a]
        deg = int(rng.integers(0, 7))
        env = 1 - np.exp(-tt / rng.uniform(0.05, 0.3))
        vib = 1 + 0.004 * np.sin(2 * np.pi * rng.uniform(4, 6) * tt)
        for step in (0, 2, 4):
            f = root * 2 * 2 ** ((scale[(deg + step) % 7] + 12 * ((deg + step) // 7)) / 12)
            out[a: a + len(tt)] += 0.3 * env * tone(f * vib, int(rng.integers(3, 10)), rng.uniform(0.8, 2.0))
    m_harm, m_tilt, decay = int(rng.integers(2, 12)), rng.uniform(0.5, 1.5), rng.uniform(2, 8)
    for a in range(0, n, beat):  # melody and bass
        tt = t[a: a + beat] - t[a]
        f = root * 4 * 2 ** (scale[int(rng.integers(0, 7))] / 12)
        out[a: a + len(tt)] += 0.5 * np.exp(-decay * tt) * tone(np.full(len(tt), f), m_harm, m_tilt)
        if a % (2 * beat) == 0:
            bass = root / 2 * 2 ** (scale[int(rng.integers(0, 7))] / 12)
            out[a: a + len(tt)] += 0.4 * np.exp(-3 * tt) * tone(np.full(len(tt), bass), 4, 1.0)
    if rng.random() < 0.5:  # drums
        for a in range(0, n, beat):
            tt = t[a: a + beat] - t[a]
            if (a // beat) % 2 == 0:
                out[a: a + len(tt)] += 0.8 * np.exp(-25 * tt) * np.sin(2 * np.pi * (50 + 60 * np.exp(-30 * tt)) * tt)
            hat = rng.standard_normal(len(tt)) * np.exp(-tt / 0.015)
            out[a: a + len(tt)] += 0.15 * np.diff(hat, prepend=0.0)
    return (out / (np.sqrt(np.mean(out ** 2)) + 1e-12)).astype(np.float32)


def add_music(x: np.ndarray, snr_db: float, rng: np.random.Generator, sr: int = SAMPLE_RATE,
              music: np.ndarray | None = None) -> np.ndarray:
    """``x`` with music ``snr_db`` below its RMS (speech over music on hold, radio, TV): a random stretch of
    ``music`` (tiled if short) or, by default, new :func:`background_music`."""
    def make() -> np.ndarray:
        if music is None:
            return background_music(len(x), rng, sr)
        m = np.resize(np.roll(music, -int(rng.integers(0, len(music)))), len(x))
        return m / (np.sqrt(np.mean(m.astype(np.float64) ** 2)) + 1e-12)

    return _add_under(x, snr_db, make)


def reverb(x: np.ndarray, rt60: float, rng: np.random.Generator, sr: int = SAMPLE_RATE,
           wet: float = 0.5) -> np.ndarray:
    """Convolve with a synthetic room response (exponentially decaying noise, ``rt60`` seconds)."""
    from scipy.signal import fftconvolve

    n = max(16, int(rt60 * sr))
    t = np.arange(n) / sr
    rir = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    rir[0] = 1.0 / wet
    rir /= np.sqrt(np.sum(rir**2))
    y = fftconvolve(x, rir)[: len(x)]
    peak = np.abs(y).max()
    return (y / peak * np.abs(x).max() if peak > 0 else y).astype(np.float32)


def dither(x: np.ndarray, level_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add white noise at ``level_db`` dBFS RMS (removes exact digital zeros)."""
    return (x + rng.standard_normal(len(x)).astype(np.float32) * 10 ** (level_db / 20)).astype(np.float32)


def change_speed(x: np.ndarray, factor: float, sr: int = SAMPLE_RATE) -> np.ndarray:
    """Play ``x`` ``factor`` times faster, pitch and formants shifted together (as from a smaller or larger
    vocal tract): a resampling, so the output has about ``len(x) / factor`` samples."""
    return resample(np.asarray(x, np.float32), sr, int(round(sr / factor)))


def insert_silence(x: np.ndarray, rng: np.random.Generator, sr: int = SAMPLE_RATE,
                   max_seconds: float = 0.6) -> np.ndarray:
    """Overwrite a random stretch with digital zeros (as in TTS pauses), keeping the length."""
    n = int(rng.uniform(0.05, max_seconds) * sr)
    if n >= len(x):
        return x
    y = x.copy()
    a = int(rng.integers(0, len(x) - n))
    y[a: a + n] = 0.0
    return y


# ---------------------------------------------------------------------------- RawBoost
# Tak et al., "RawBoost: a raw data boosting and augmentation method applied to automatic speaker
# verification anti-spoofing", ICASSP 2022. Device/channel-like distortions that are not tied to any one
# codec: linear and non-linear convolutive noise, impulsive signal-dependent noise, and stationary
# signal-independent (coloured) noise.
def _notch_fir(rng: np.random.Generator, sr: int, n_bands: int = 5, min_f: float = 20.0, max_f: float = 8000.0,
               min_bw: float = 100.0, max_bw: float = 1000.0, min_taps: int = 10, max_taps: int = 100,
               gain_db: float = 0.0) -> np.ndarray:
    """A random FIR made of ``n_bands`` cascaded band-stop filters, normalised to a peak gain of ``gain_db``."""
    from scipy.signal import firwin, freqz

    b = np.ones(1)
    nyq = sr / 2
    for _ in range(n_bands):
        fc = rng.uniform(min_f, min(max_f, nyq))
        bw = rng.uniform(min_bw, max_bw)
        taps = int(rng.integers(min_taps, max_taps)) | 1  # odd length: a band-stop needs it
        f1, f2 = max(fc - bw / 2, 1.0), min(fc + bw / 2, nyq - 1.0)
        if f2 <= f1 + 1.0:
            continue
        b = np.convolve(b, firwin(taps, [f1, f2], window="hamming", fs=sr))
    _, h = freqz(b, 1, worN=512)
    return b * 10 ** (gain_db / 20) / max(float(np.abs(h).max()), 1e-8)


def _peak_norm(y: np.ndarray, like: np.ndarray) -> np.ndarray:
    peak = float(np.abs(y).max())
    return (y / peak * float(np.abs(like).max())).astype(np.float32) if peak > 0 else y.astype(np.float32)


def rawboost(x: np.ndarray, rng: np.random.Generator, sr: int = SAMPLE_RATE) -> np.ndarray:
    """One random RawBoost distortion (or all three in series), same length and peak level as ``x``."""
    from scipy.signal import lfilter

    x = np.asarray(x, np.float32)
    algo = int(rng.integers(0, 4))
    y = x.astype(np.float64)
    if algo in (0, 3):  # linear and non-linear convolutive noise: filtered powers of the signal
        out = np.zeros_like(y)
        for k in range(int(rng.integers(2, 6))):
            g = -float(rng.uniform(5, 20)) * k  # higher-order terms are weaker
            out += lfilter(_notch_fir(rng, sr, gain_db=g), 1.0, y ** (k + 1))
        y = out - out.mean()
    if algo in (1, 3):  # impulsive signal-dependent noise on up to 10 % of the samples
        n = int(len(y) * rng.uniform(0.0, 0.1))
        if n:
            pos = rng.choice(len(y), n, replace=False)
            y[pos] += 2.0 * y[pos] * (2 * rng.random(n) - 1) * (2 * rng.random(n) - 1)
    if algo in (2, 3):  # stationary signal-independent noise, shaped by random band-stops, 10-40 dB SNR
        noise = lfilter(_notch_fir(rng, sr), 1.0, rng.standard_normal(len(y)))
        p_sig, p_noise = float(np.mean(y**2)), float(np.mean(noise**2))
        if p_sig > 0 and p_noise > 0:
            y = y + noise * np.sqrt(p_sig / p_noise) * 10 ** (-rng.uniform(10, 40) / 20)
    return _peak_norm(y, x)


@dataclass(frozen=True)
class AugmentConfig:
    p_silence: float = 0.25  # overwrite a stretch with digital zeros
    p_reverb: float = 0.15
    p_rawboost: float = 0.0  # RawBoost device/channel distortions (see rawboost)
    p_speed: float = 0.0  # training crops played faster or slower (change_speed): more voices on both sides
    speed: tuple[float, float] = (0.88, 1.12)
    p_noise: float = 0.35
    p_music: float = 0.0  # instrumental music under the speech (background_music)
    music_snr_db: tuple[float, float] = (3.0, 25.0)
    snr_db: tuple[float, float] = (8.0, 40.0)
    p_telephone: float = 0.45  # 8 kHz band-pass + narrowband codec
    # relative weights of the narrowband codecs, e.g. (("gsm", 3.0), ("ulaw", 2.0)); a codec not named weighs 1;
    # empty: all alike
    telephone_weights: tuple[tuple[str, float], ...] = ()
    p_wideband_codec: float = 0.15
    wideband_codecs: tuple[str, ...] = WIDEBAND_CODECS  # drawn alike; "opus16" may join them (slow to encode)
    p_band_limit: float = 0.15  # low-pass at a random 3.4-7.5 kHz, no codec
    rms_db: tuple[float, float] = (-35.0, -14.0)  # final level, dBFS
    dither_db: tuple[float, float] = (-90.0, -66.0)  # always added

    def __post_init__(self) -> None:
        pairs = tuple((str(c), float(w)) for c, w in self.telephone_weights)
        bad = [c for c, w in pairs if c not in NARROWBAND_CODECS or not w >= 0]
        if bad or (pairs and sum(dict(pairs).get(c, 1.0) for c in NARROWBAND_CODECS) <= 0):
            raise ValueError(f"telephone codec weights must be >= 0 and name codecs among "
                             f"{', '.join(NARROWBAND_CODECS)}; "
                             f"got {dict(pairs)}")
        object.__setattr__(self, "telephone_weights", pairs)
        wide = tuple(str(c) for c in self.wideband_codecs)
        if not wide or any(c not in CODECS or c in NARROWBAND_CODECS for c in wide):
            raise ValueError(f"wideband codecs must be one or more of "
                             f"{', '.join(c for c in CODECS if c not in NARROWBAND_CODECS)}; got {list(wide)}")
        object.__setattr__(self, "wideband_codecs", wide)


class Augmenter:
    """Random, label-blind channel simulation. ``augmenter(x)`` returns a new signal of the same length."""

    def __init__(self, config: AugmentConfig = AugmentConfig(), seed: int | None = None,
                 sr: int = SAMPLE_RATE) -> None:
        self.config = config
        self.rng = np.random.default_rng(seed)
        self.sr = sr
        self.telephone_codecs = TELEPHONE_CODECS + (("amr",) if shutil.which("sox") else ())
        weights = dict(config.telephone_weights)
        w = np.array([weights.get(c, 1.0) for c in self.telephone_codecs])
        if weights and not w.sum() > 0:  # only AMR weighted, and no sox here
            raise ValueError(f"telephone codec weights leave no codec to draw: {config.telephone_weights}")
        self._telephone_p = w / w.sum() if weights else None  # None: uniform (draws as before the option)
        # pieces of background music, made as first drawn (music costs ~10 ms a second to make), each from its
        # own seed so that which piece a call draws does not depend on which were made before
        self._music: dict[int, np.ndarray] = {}
        self._music_seed = int(np.random.default_rng(seed).integers(2**31))

    def __call__(self, x: np.ndarray, channel: str | None = None) -> np.ndarray:
        """``channel``: None draws the channel stage at random; ``"none"`` skips it and ``"telephone"`` always
        takes the telephone channel. Every other random choice is drawn the same in all three, so with the same
        seed two calls differ only in the channel (see ``CropStream``'s view pairs)."""
        if channel not in (None, "none", "telephone"):
            raise ValueError(f"channel must be None, 'none' or 'telephone', got {channel!r}")
        c, r, sr = self.config, self.rng, self.sr
        y = np.asarray(x, np.float32)
        y = gain_to_rms(y, -24.0)
        if r.random() < c.p_silence:
            y = insert_silence(y, r, sr)
        if r.random() < c.p_reverb:
            y = reverb(y, float(r.uniform(0.15, 0.7)), r, sr)
        if c.p_rawboost and r.random() < c.p_rawboost:
            y = rawboost(y, r, sr)
        if c.p_music and r.random() < c.p_music:
            k = int(r.integers(0, MUSIC_BANK))
            if k not in self._music:
                self._music[k] = background_music(int(MUSIC_SECONDS * sr),
                                                  np.random.default_rng(self._music_seed + k), sr)
            y = add_music(y, float(r.uniform(*c.music_snr_db)), r, sr, music=self._music[k])
        if r.random() < c.p_noise:
            y = add_noise(y, float(r.uniform(*c.snr_db)), r, exponent=float(r.choice([0.0, 1.0, 2.0])))
        u = r.random()  # drawn even when ``channel`` decides, to keep the later draws aligned
        stage = channel or ("telephone" if u < c.p_telephone else
                            "wideband" if u < c.p_telephone + c.p_wideband_codec else
                            "band-limit" if u < c.p_telephone + c.p_wideband_codec + c.p_band_limit else "none")
        try:
            if stage == "telephone":
                y = band_limit(y, float(r.uniform(60, 300)), float(r.uniform(3300, 3800)), sr)
                name = str(r.choice(self.telephone_codecs, p=self._telephone_p))
                if name != "amr":  # AMR costs a process per call: use it a little less
                    y = codec(y, name, sr, bitrate=float(r.uniform(0.3, 1.0)))
                elif r.random() < 0.3:
                    y = codec(y, name, sr)
            elif stage == "wideband":
                y = codec(y, str(r.choice(c.wideband_codecs)), sr, bitrate=float(r.uniform(0.2, 1.0)))
            elif stage == "band-limit":
                y = band_limit(y, 20.0, float(r.uniform(3400, 7500)), sr)
        except Exception as err:  # noqa: BLE001 - a codec failing on one example must not stop training
            log.debug("codec augmentation failed: %s", err)
        y = gain_to_rms(y, float(r.uniform(*c.rms_db)))
        return np.clip(dither(y, float(r.uniform(*c.dither_db)), r), -1.0, 1.0)


def telephone_copy(x: np.ndarray, name: str = "ulaw", sr: int = SAMPLE_RATE) -> np.ndarray:
    """Deterministic telephone version of a clip: 300-3400 Hz band, 8 kHz, then the codec ``name``."""
    return codec(band_limit(x, 300.0, 3400.0, sr), name, sr)
