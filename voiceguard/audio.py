"""Audio I/O: decode any common recording to float32 blocks at the model's sample rate.

Everything that touches a file on disk lives here. Decoding goes through ``soundfile``
(libsndfile: WAV incl. G.711 mu-law/A-law and GSM 6.10, FLAC, OGG/Vorbis, Opus, MP3, AIFF, AU, ...)
and, for containers libsndfile does not read (m4a, amr, webm, ...), through ``ffmpeg`` when it is on PATH.
Long files are read and resampled block by block, so memory does not grow with the length of a call.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal

import numpy as np

from .errors import AudioLoadError

SAMPLE_RATE = 16_000  # Hz; every VoiceGuard model works at this rate
MIN_SAMPLE_RATE = 8_000  # Hz; narrowband telephone, the lowest rate we accept
MAX_SAMPLE_RATE = 384_000  # Hz; anything above is surely a broken header
MAX_DURATION = 24 * 3600.0  # s; longer "calls" are refused as a likely mistake
BLOCK_SECONDS = 30.0  # s of audio decoded at a time

#: extensions libsndfile decodes itself
SOUNDFILE_EXTENSIONS = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au",
     ".snd", ".caf", ".w64", ".rf64", ".voc", ".sph", ".gsm"}
)
#: extensions handed to ffmpeg (only when it is installed)
FFMPEG_EXTENSIONS = frozenset({".m4a", ".mp4", ".aac", ".amr", ".3gp", ".webm", ".mka", ".wma", ".mov"})

Channels = Literal["mix", "each"]


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, read from its header without decoding it."""

    path: str
    sample_rate: int  # Hz, as stored
    channels: int
    frames: int  # samples per channel (may be an estimate for MP3/ffmpeg formats)
    format: str  # e.g. "WAV/ULAW", "FLAC/PCM_16", "ffmpeg/aac"

    @property
    def duration(self) -> float:
        """Length in seconds."""
        return self.frames / float(self.sample_rate)


def audio_extensions() -> frozenset[str]:
    """File extensions :func:`iter_blocks` can decode on this machine."""
    return SOUNDFILE_EXTENSIONS | (FFMPEG_EXTENSIONS if has_ffmpeg() else frozenset())


def has_ffmpeg() -> bool:
    return shutil.which("ffmpeg") is not None and shutil.which("ffprobe") is not None


def _check_path(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise AudioLoadError(f"{p}: no such file", kind="missing")
    if p.is_dir():
        raise AudioLoadError(f"{p}: is a directory, not an audio file", kind="not-audio")
    if not os.access(p, os.R_OK):
        raise AudioLoadError(f"{p}: permission denied", kind="unreadable")
    if p.stat().st_size == 0:
        raise AudioLoadError(f"{p}: empty file (0 bytes)", kind="empty")
    return p


def _validate_info(info: AudioInfo) -> AudioInfo:
    if not (MIN_SAMPLE_RATE <= info.sample_rate <= MAX_SAMPLE_RATE):
        raise AudioLoadError(
            f"{info.path}: sample rate {info.sample_rate} Hz is outside the supported "
            f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz", kind="bad-rate")
    if info.channels < 1:
        raise AudioLoadError(f"{info.path}: no audio channels", kind="empty")
    if info.duration > MAX_DURATION:
        raise AudioLoadError(
            f"{info.path}: {info.duration / 3600:.1f} h long, above the {MAX_DURATION / 3600:.0f} h limit; "
            "split it first", kind="too-long")
    return info


def info(path: str | os.PathLike) -> AudioInfo:
    """Read a file's header.

    Raises
    ------
    AudioLoadError
        missing, unreadable, empty, not audio, unsupported rate or too long.
    """
    p = _check_path(path)
    import soundfile as sf

    try:
        i = sf.info(str(p))
        frames = int(i.frames)
        if frames >= 2**62:  # libsndfile reports "unknown" this way for some streams
            frames = 0
        return _validate_info(AudioInfo(str(path), int(i.samplerate), int(i.channels), frames,
                                        f"{i.format}/{i.subtype}"))
    except AudioLoadError:
        raise
    except Exception as sf_err:  # noqa: BLE001 - libsndfile raises several types
        if p.suffix.lower() in FFMPEG_EXTENSIONS or p.suffix.lower() not in SOUNDFILE_EXTENSIONS:
            if has_ffmpeg():
                return _validate_info(_ffprobe(p, str(path)))
            if p.suffix.lower() in FFMPEG_EXTENSIONS:
                raise AudioLoadError(
                    f"{path}: {p.suffix} files need ffmpeg, which is not installed "
                    "(apt-get install ffmpeg)", kind="needs-ffmpeg") from None
        raise AudioLoadError(f"{path}: not a recognised audio file ({_short(sf_err)})",
                             kind="not-audio") from None


def _short(err: Exception) -> str:
    msg = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
    if ":" in msg and "Error" in msg.split(":")[0]:
        msg = msg.split(":", 1)[1].strip()
    return msg[:160]


def _ffprobe(p: Path, shown: str) -> AudioInfo:
    cmd = ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
           "stream=sample_rate,channels,duration,codec_name:format=duration", "-of", "json", str(p)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        meta = json.loads(out.stdout or "{}")
        streams = meta.get("streams") or []
        if not streams:
            raise ValueError("no audio stream")
        s = streams[0]
        sr = int(s["sample_rate"])
        dur = float(s.get("duration") or meta.get("format", {}).get("duration") or 0.0)
        return AudioInfo(shown, sr, int(s["channels"]), int(round(dur * sr)), f"ffmpeg/{s.get('codec_name')}")
    except Exception as err:  # noqa: BLE001
        raise AudioLoadError(f"{shown}: not a recognised audio file (ffprobe: {_short(err)})",
                             kind="not-audio") from None


class _Resampler:
    """Streaming resampler for (frames, channels) float32 blocks (soxr, HQ)."""

    def __init__(self, in_rate: int, out_rate: int, channels: int) -> None:
        self.passthrough = in_rate == out_rate
        if not self.passthrough:
            import soxr

            self._stream = soxr.ResampleStream(in_rate, out_rate, channels, dtype="float32", quality="HQ")

    def __call__(self, block: np.ndarray, last: bool = False) -> np.ndarray:
        if self.passthrough:
            return block
        return self._stream.resample_chunk(np.ascontiguousarray(block), last=last)


def iter_blocks(
    path: str | os.PathLike,
    *,
    sample_rate: int = SAMPLE_RATE,
    channels: Channels = "mix",
    block_seconds: float = BLOCK_SECONDS,
) -> Iterator[np.ndarray]:
    """Decode a file block by block, resampled to ``sample_rate``.

    Parameters
    ----------
    path : str or path-like
    sample_rate : int > 0
        output rate in Hz.
    channels : {"mix", "each"}
        ``"mix"`` averages all channels into one; ``"each"`` keeps them apart.
    block_seconds : float > 0
        length of each decoded block, in seconds of the *input* file.

    Yields
    ------
    np.ndarray [shape=(C, n), dtype=float32]
        consecutive blocks in [-1, 1]; C = 1 for ``"mix"``, the file's channel count for ``"each"``.

    Raises
    ------
    AudioLoadError
        when the file cannot be opened or decoded, holds no samples, or holds non-finite samples.
    """
    if channels not in ("mix", "each"):
        raise ValueError(f"channels must be 'mix' or 'each', got {channels!r}")
    meta = info(path)
    if meta.format.startswith("ffmpeg/"):
        source = _ffmpeg_blocks(Path(path), meta, block_seconds)
    else:
        source = _soundfile_blocks(Path(path), meta, block_seconds)
    out_channels = 1 if channels == "mix" else meta.channels
    resampler = _Resampler(meta.sample_rate, sample_rate, out_channels)
    total = 0
    try:
        for raw in source:  # raw: (frames, C) float32
            if raw.size == 0:
                continue
            if not np.isfinite(raw).all():
                raise AudioLoadError(f"{path}: contains NaN or infinite samples", kind="corrupt")
            total += raw.shape[0]
            block = raw.mean(axis=1, keepdims=True, dtype=np.float32) if channels == "mix" else raw
            y = resampler(block)
            if y.shape[0]:
                yield np.ascontiguousarray(y.T)
        if total == 0:
            raise AudioLoadError(f"{path}: contains no audio samples", kind="empty")
        tail = resampler(np.zeros((0, out_channels), np.float32), last=True)
        if tail.shape[0]:
            yield np.ascontiguousarray(tail.T)
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def _soundfile_blocks(p: Path, meta: AudioInfo, block_seconds: float) -> Iterator[np.ndarray]:
    import soundfile as sf

    block = max(1, int(block_seconds * meta.sample_rate))
    try:
        with sf.SoundFile(str(p)) as f:
            while True:
                data = f.read(block, dtype="float32", always_2d=True)
                if data.shape[0] == 0:
                    break
                yield data
    except AudioLoadError:
        raise
    except Exception as err:  # noqa: BLE001 - libsndfile decode errors of several types
        raise AudioLoadError(f"{meta.path}: could not decode ({_short(err)})", kind="corrupt") from None


def _ffmpeg_blocks(p: Path, meta: AudioInfo, block_seconds: float) -> Iterator[np.ndarray]:
    cmd = ["ffmpeg", "-v", "error", "-nostdin", "-i", str(p), "-f", "f32le", "-acodec", "pcm_f32le",
           "-ac", str(meta.channels), "-ar", str(meta.sample_rate), "-"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    frame_bytes = 4 * meta.channels
    want = max(1, int(block_seconds * meta.sample_rate)) * frame_bytes
    try:
        assert proc.stdout is not None
        while True:
            buf = proc.stdout.read(want)
            if not buf:
                break
            usable = len(buf) - len(buf) % frame_bytes
            yield np.frombuffer(buf[:usable], dtype="<f4").reshape(-1, meta.channels)
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        if proc.wait() != 0:
            raise AudioLoadError(f"{meta.path}: ffmpeg could not decode it ({err.strip()[-160:]})",
                                 kind="corrupt")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def load(path: str | os.PathLike, *, sample_rate: int = SAMPLE_RATE, channels: Channels = "mix") -> np.ndarray:
    """Decode a whole file at ``sample_rate``.

    Returns
    -------
    np.ndarray [shape=(C, n), dtype=float32]
        C = 1 for ``"mix"``; prefer :func:`iter_blocks` for long recordings.
    """
    blocks = list(iter_blocks(path, sample_rate=sample_rate, channels=channels))
    return np.concatenate(blocks, axis=1) if blocks else np.zeros((1, 0), np.float32)


def resample(samples: np.ndarray, orig_rate: int, new_rate: int) -> np.ndarray:
    """Resample a signal along its last axis (soxr, HQ).

    Parameters
    ----------
    samples : np.ndarray [shape=(..., n)]
    orig_rate, new_rate : int > 0, in Hz

    Returns
    -------
    np.ndarray [shape=(..., m), dtype=float32]
    """
    x = np.asarray(samples, dtype=np.float32)
    if orig_rate == new_rate:
        return x
    import soxr

    if x.ndim == 1:
        return soxr.resample(x, orig_rate, new_rate, quality="HQ").astype(np.float32, copy=False)
    flat = x.reshape(-1, x.shape[-1])
    out = soxr.resample(flat.T, orig_rate, new_rate, quality="HQ").T
    return np.ascontiguousarray(out.reshape(*x.shape[:-1], -1), dtype=np.float32)


def validate_samples(samples: np.ndarray, sample_rate: int) -> np.ndarray:
    """Check an in-memory signal and return it as float32 [shape=(C, n)].

    Accepts [shape=(n,)] mono or [shape=(C, n)] multichannel float or int arrays.
    """
    x = np.asarray(samples)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise AudioLoadError(f"audio array must be 1-D (n,) or 2-D (channels, n), got shape {x.shape}",
                             kind="not-audio")
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(np.iinfo(x.dtype).max)
    x = x.astype(np.float32, copy=False)
    if x.shape[1] == 0:
        raise AudioLoadError("audio array holds no samples", kind="empty")
    if not np.isfinite(x).all():
        raise AudioLoadError("audio array contains NaN or infinite samples", kind="corrupt")
    if not (MIN_SAMPLE_RATE <= int(sample_rate) <= MAX_SAMPLE_RATE):
        raise AudioLoadError(f"sample rate {sample_rate} Hz is outside the supported "
                             f"{MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz", kind="bad-rate")
    return x
