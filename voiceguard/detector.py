"""Score recordings: the inference path from a file (or array) to a :class:`ScoreResult`.

audio blocks (``audio.iter_blocks``) -> speech frames (``vad``) -> sliding windows (``windows``)
-> batched front-end + model under ``torch.inference_mode`` -> window logits
-> call logit (highest mean of `context` consecutive window logits, lowered for long calls: ``windows.run_scores``)
-> calibrated probability, verdict, and flagged regions (the runs at or above the threshold).

Audio is consumed block by block and windows are scored as soon as a batch is full, so memory does not grow
with the length of a call. Windows of many files are packed into the same batches
(:meth:`Detector.score_files`), so short files do not waste model calls.
"""
from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Callable, Iterable, Iterator

import numpy as np

from . import audio as audio_io
from .checkpoint import CheckpointConfig
from .errors import AudioLoadError, VoiceGuardError
from .vad import FRAME_SECONDS, SpeechCheck, SpeechDetector
from .windows import flag_regions, run_scores, touching, window_starts

log = logging.getLogger(__name__)

VERDICTS = ("synthetic", "human", "inconclusive")
DEFAULT_BATCH = 32  # windows per model call
DITHER_RMS = 1e-4  # -80 dBFS
MAX_PENDING_FILES = 64  # files read ahead while their windows wait for a full batch
#: features a ScoringPlan may keep; a larger set of signals is scored in full each time. A fine-tune's validation
#: sets (the shipped checkpoint's held-out files and the new ones, each clean and through four telephone codecs)
#: took 1.37 GB for 2,585 signals in session 34
PLAN_MAX_BYTES = 2 << 30


@dataclass
class Segment:
    """A stretch of the call, in seconds from its start, with the probability it is synthetic."""

    start: float
    end: float
    probability: float


@dataclass
class ScoreResult:
    """What VoiceGuard says about one recording (one channel of it, with ``channels="each"``)."""

    path: str | None
    channel: int | None  # None when channels were mixed
    #: calibrated P(synthetic) for the call; low-confidence when the verdict is "inconclusive" for too little
    #: speech; None when nothing was scored (or the checkpoint has no short-clip calibration)
    probability: float | None
    verdict: str  # "synthetic" | "human" | "inconclusive"
    threshold: float  # probability at and above which the verdict is "synthetic"
    duration: float  # s
    speech_seconds: float  # s of speech found by the VAD
    segments: list[Segment] = field(default_factory=list)  # every scored window, in time order
    regions: list[Segment] = field(default_factory=list)  # flagged stretches (hysteresis), in time order
    model: dict = field(default_factory=dict)  # {"name", "version", "trained"}
    reason: str = ""  # why the verdict is inconclusive, when it is
    logit: float | None = None  # raw (uncalibrated) call-level model logit, for calibration and score files

    @property
    def top_segment(self) -> Segment | None:
        """The most suspicious scored window."""
        return max(self.segments, key=lambda s: s.probability) if self.segments else None

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("probability",):
            if d[key] is not None:
                d[key] = round(d[key], 6)
        for seg in d["segments"] + d["regions"]:
            seg["start"], seg["end"] = round(seg["start"], 3), round(seg["end"], 3)
            seg["probability"] = round(seg["probability"], 6)
        return d


@dataclass
class FileOutcome:
    """Result of scoring one path: one result per channel (one in all when mixed), or an error."""

    path: str
    results: list[ScoreResult] = field(default_factory=list)
    error: VoiceGuardError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


class _Windower:
    """Cuts one channel's sample stream into windows and tracks its speech frames."""

    def __init__(self, length: int, hop: int, min_length: int, vad: SpeechDetector) -> None:
        self.length, self.hop, self.min_length = length, hop, min_length
        self.vad = vad
        self.frame = vad.frame
        self.buf = np.zeros(0, np.float32)
        self.buf_start = 0  # absolute index of buf[0]
        self.total = 0  # samples pushed so far
        self.next_start = 0
        self.covered = 0  # end of the last emitted window
        self._vad_rest = np.zeros(0, np.float32)
        self._flags = np.zeros(1024, dtype=bool)
        self.n_flags = 0

    def _add_flags(self, new: np.ndarray) -> None:
        need = self.n_flags + len(new)
        if need > len(self._flags):
            grown = np.zeros(max(need, 2 * len(self._flags)), dtype=bool)
            grown[: self.n_flags] = self._flags[: self.n_flags]
            self._flags = grown
        self._flags[self.n_flags: need] = new
        self.n_flags = need

    def speech_fraction(self, start: int, end: int) -> float:
        a, b = start // self.frame, max(start // self.frame + 1, end // self.frame)
        flags = self._flags[a: min(b, self.n_flags)]
        return float(flags.sum()) / float(b - a)

    @property
    def speech_seconds(self) -> float:
        return float(self._flags[: self.n_flags].sum()) * FRAME_SECONDS

    def speech_seconds_without(self, rejected: list[tuple[int, int]], kept: list[tuple[int, int]]) -> float:
        """Speech seconds, leaving out frames of the ``rejected`` windows (sample spans) that no ``kept``
        window covers."""
        flags = self._flags[: self.n_flags].copy()
        drop = np.zeros_like(flags)
        for a, b in rejected:
            drop[a // self.frame: -(-b // self.frame)] = True
        for a, b in kept:
            drop[a // self.frame: -(-b // self.frame)] = False
        return float((flags & ~drop).sum()) * FRAME_SECONDS

    def push(self, x: np.ndarray) -> list[tuple[int, np.ndarray]]:
        pending = np.concatenate([self._vad_rest, x]) if len(self._vad_rest) else x
        n_frames = len(pending) // self.frame
        self._add_flags(self.vad(pending[: n_frames * self.frame]))
        self._vad_rest = pending[n_frames * self.frame:].copy()
        self.buf = np.concatenate([self.buf, x]) if len(self.buf) else np.asarray(x, np.float32)
        self.total += len(x)
        out = []
        while self.next_start + self.length <= self.total:
            off = self.next_start - self.buf_start
            out.append((self.next_start, self.buf[off: off + self.length].copy()))
            self.covered = self.next_start + self.length
            self.next_start += self.hop
        keep = max(self.buf_start, min(self.next_start, self.total - self.length))
        self.buf = self.buf[keep - self.buf_start:]
        self.buf_start = keep
        return out

    def finish(self) -> list[tuple[int, np.ndarray]]:
        if self.covered >= self.total:
            return []
        if self.total <= self.length:  # the whole (short) signal is one window
            return [(0, self.buf[: self.total].copy())] if self.total >= self.min_length else []
        start = self.total - self.length  # ragged tail: one window aligned to the end
        off = start - self.buf_start
        self.covered = self.total
        return [(start, self.buf[off: off + self.length].copy())]


@dataclass
class _Track:
    """Windows of one channel of one file, waiting for their logits."""

    channel: int | None
    windower: _Windower
    starts: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    logits: list[float | None] = field(default_factory=list)  # None: not speech, not scored
    rejected: list[int] = field(default_factory=list)  # windows the neural VAD found not to be speech


@dataclass
class _Job:
    path: str
    tracks: list[_Track] = field(default_factory=list)
    unscored: int = 0
    done: bool = False
    error: VoiceGuardError | None = None
    duration: float = 0.0


@dataclass
class ScoringPlan:
    """What scoring a fixed set of signals takes besides the model: their windows after both speech checks
    and those windows' features, made once by :meth:`Detector.prepare_arrays` and re-scored with any weights
    by :meth:`Detector.rescore` (a training run's validation set, scored after every epoch). Re-scoring
    runs only the networks, on the same batches, so it gives what scoring the signals in full would."""

    key: tuple  # the settings the windows and features depend on (see Detector._plan_key)
    jobs: list[_Job] = field(default_factory=list)
    batches: list[tuple[list[tuple[_Track, int]], object]] = field(default_factory=list)  # (windows, features)


class Detector:
    """A loaded model with its front-end, windowing, calibration and threshold.

    Examples
    --------
    >>> det = Detector.load()                       # the shipped checkpoint
    >>> res = det.score_file("call.wav")            # ScoreResult, channels mixed
    >>> res.verdict, res.probability, res.regions
    >>> det.score_file("call.wav", channels="each") # list[ScoreResult], one per channel
    """

    def __init__(self, model, config: CheckpointConfig, *, device: str | None = None,
                 batch_size: int = DEFAULT_BATCH, threshold: float | None = None) -> None:
        import torch

        from .features import build_frontend

        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.config = config
        self.model = model.to(self.device).eval()
        self.frontend = build_frontend(config.front_ends).to(self.device).eval()
        # second speech stage: rejects windows of tones, DTMF, music or noise the WebRTC VAD let through
        self.speech_check = SpeechCheck(config.vad.neural_threshold, sample_rate=config.sample_rate) \
            if config.vad.neural else None
        self.batch_size = int(batch_size)
        if threshold is not None and not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be a probability in (0, 1), got {threshold}")
        self.threshold = float(config.threshold if threshold is None else threshold)
        sr = config.sample_rate
        self.win = int(round(config.window.seconds * sr))
        self.hop = int(round(config.window.hop_seconds * sr))
        self.min_len = max(int(round(config.window.min_seconds * sr)), config.features.n_fft * 4)
        # fixed, tiny noise (-80 dBFS) added to every window: exact digital zeros (TTS pauses, padding)
        # then look like the dithered silence the model saw in training; fixed seed keeps scoring deterministic
        self._dither = (np.random.default_rng(0).standard_normal(self.win) * DITHER_RMS).astype(np.float32)
        if not 0 < self.hop <= self.win:
            raise ValueError(f"window hop ({config.window.hop_seconds} s) must be in (0, window length]")

    # ------------------------------------------------------------------ construction
    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, device: str | None = None,
             window_seconds: float | None = None, hop_seconds: float | None = None, **kwargs) -> "Detector":
        """Load a checkpoint (default: ``checkpoints/voiceguard.safetensors`` or $VOICEGUARD_CHECKPOINT).

        ``window_seconds`` / ``hop_seconds`` override the checkpoint's windowing (a warning says so).
        """
        from . import checkpoint

        model, config = checkpoint.load(path)
        if window_seconds is not None or hop_seconds is not None:
            import warnings
            from dataclasses import replace

            w = replace(config.window, seconds=window_seconds or config.window.seconds,
                        hop_seconds=hop_seconds or config.window.hop_seconds)
            warnings.warn(f"overriding the checkpoint's windows ({config.window.seconds} s every "
                          f"{config.window.hop_seconds} s) with {w.seconds} s every {w.hop_seconds} s; "
                          "scores will differ from the calibrated ones", stacklevel=2)
            config = config.replace(window=w)
        return cls(model, config, device=device, **kwargs)

    @classmethod
    def untrained(cls, config: CheckpointConfig | None = None, *, seed: int = 0, **kwargs) -> "Detector":
        """A detector with random weights: for tests and smoke runs only; its scores mean nothing."""
        import torch

        from .model import build_model

        config = config or CheckpointConfig(name="untrained")
        torch.manual_seed(seed)
        model = build_model(config.model)
        return cls(model, config, **kwargs)

    @property
    def model_info(self) -> dict:
        from . import __version__

        return {"name": self.config.name, "version": self.config.voiceguard_version or __version__,
                "trained": self.config.trained}

    # ------------------------------------------------------------------ public scoring API
    def score_file(self, path: str | os.PathLike, *, channels: str = "mix"):
        """Score one file. Returns a :class:`ScoreResult` for ``"mix"``, a list of them for ``"each"``.

        Raises
        ------
        AudioLoadError
            when the file cannot be read.
        """
        outcome = next(self.score_files([path], channels=channels))
        if outcome.error is not None:
            raise outcome.error
        return outcome.results[0] if channels == "mix" else outcome.results

    def score_array(self, samples: np.ndarray, sample_rate: int, *, channels: str = "mix"):
        """Score an in-memory signal [shape=(n,) or (C, n)] at ``sample_rate`` Hz (same return as ``score_file``)."""
        x = audio_io.validate_samples(samples, sample_rate)
        if channels == "mix":
            x = x.mean(axis=0, keepdims=True)
        x = audio_io.resample(x, int(sample_rate), self.config.sample_rate)
        outcome = next(self._score_sources([(None, iter([x]))], channels=channels))
        if outcome.error is not None:
            raise outcome.error
        return outcome.results[0] if channels == "mix" else outcome.results

    def score_arrays(self, signals: Iterable[np.ndarray], sample_rate: int) -> Iterator[FileOutcome]:
        """Score many mono in-memory signals [shape=(n,)] at ``sample_rate`` Hz, packed into shared batches."""
        sources = ((None, iter([audio_io.resample(audio_io.validate_samples(x, sample_rate), sample_rate,
                                                  self.config.sample_rate)])) for x in signals)
        return self._score_sources(sources, channels="mix")

    def prepare_arrays(self, signals: list[np.ndarray], sample_rate: int,
                       max_bytes: int = PLAN_MAX_BYTES) -> ScoringPlan | None:
        """Windows, speech checks and features of mono signals, kept for :meth:`rescore`; None when their
        features could take more than ``max_bytes`` (score them with :meth:`score_arrays` then)."""
        import torch

        signals = [audio_io.resample(audio_io.validate_samples(x, sample_rate), sample_rate,
                                     self.config.sample_rate) for x in signals]
        with torch.inference_mode():  # bytes of one window's features, times the most windows there can be
            per_window = self.frontend(torch.zeros(1, self.win, device=self.device)).numel() * 4
        most = sum(len(window_starts(x.shape[-1], self.win, self.hop)) for x in signals)
        if most * per_window > max_bytes:
            return None
        plan = ScoringPlan(self._plan_key())
        for _ in self._score_sources(((None, iter([x])) for x in signals), channels="mix", plan=plan):
            pass
        return plan

    def rescore(self, plan: ScoringPlan) -> list[FileOutcome]:
        """Outcomes of the signals of ``plan`` (from :meth:`prepare_arrays`) with this detector's model: the
        networks alone run. Its windowing, speech checks and front-ends must be the plan's."""
        import torch

        if not self.can_rescore(plan):
            raise ValueError("this scoring plan was made with other windows, speech checks or front-ends")
        with torch.inference_mode():
            for windows, feats in plan.batches:
                logits = self.model(feats.to(self.device)).float().cpu().numpy()
                for (track, k), z in zip(windows, logits):
                    track.logits[k] = float(z)
        return [self._finish(job) for job in plan.jobs]

    def can_rescore(self, plan: ScoringPlan | None) -> bool:
        return plan is not None and plan.key == self._plan_key()

    def _plan_key(self) -> tuple:
        c = self.config
        return (c.sample_rate, c.window, c.vad, tuple(c.front_ends), self.batch_size)

    def score_files(self, paths: Iterable[str | os.PathLike], *, channels: str = "mix",
                    progress: Callable[[FileOutcome], None] | None = None) -> Iterator[FileOutcome]:
        """Score many files, packing their windows into shared batches; yields outcomes in input order.

        A file that cannot be read yields a :class:`FileOutcome` with ``error`` set; the others go on.
        """
        sources = ((str(p), audio_io.iter_blocks(p, sample_rate=self.config.sample_rate, channels=channels))
                   for p in paths)
        for outcome in self._score_sources(sources, channels=channels):
            if progress is not None:
                progress(outcome)
            yield outcome

    # ------------------------------------------------------------------ engine
    def _new_track(self, channel: int | None) -> _Track:
        vad = SpeechDetector(self.config.vad, self.config.sample_rate)
        return _Track(channel, _Windower(self.win, self.hop, self.min_len, vad))

    def _score_sources(self, sources, *, channels: str, plan: ScoringPlan | None = None) -> Iterator[FileOutcome]:
        """Outcomes in input order; with ``plan``, its jobs and batches are recorded instead (the model is not
        run and nothing is yielded)."""
        queue: deque[_Job] = deque()
        batch: list[tuple[_Job, _Track, int, np.ndarray]] = []

        def add(job: _Job, track: _Track, windows: list[tuple[int, np.ndarray]]) -> None:
            w = track.windower
            for start, x in windows:
                track.starts.append(start)
                track.lengths.append(len(x))
                if w.speech_fraction(start, start + len(x)) >= self.config.window.min_speech_fraction:
                    track.logits.append(np.nan)  # placeholder until scored
                    job.unscored += 1
                    batch.append((job, track, len(track.logits) - 1, x))
                else:
                    track.logits.append(None)
            if len(batch) >= self.batch_size:
                self._run_batch(batch, plan)
                batch.clear()

        for path, blocks in sources:
            job = _Job(path or "")
            queue.append(job)
            if plan is not None:
                plan.jobs.append(job)
            try:
                for block in blocks:  # (C, n) float32 at the model rate
                    if not job.tracks:
                        n_ch = block.shape[0]
                        job.tracks = [self._new_track(None if channels == "mix" else c) for c in range(n_ch)]
                    for track, x in zip(job.tracks, block):
                        add(job, track, track.windower.push(x))
                if not job.tracks or job.tracks[0].windower.total == 0:
                    raise AudioLoadError(f"{path}: contains no audio samples", kind="empty")
                for track in job.tracks:
                    add(job, track, track.windower.finish())
                job.duration = job.tracks[0].windower.total / self.config.sample_rate
            except VoiceGuardError as err:
                job.error = err
                job.unscored = 0
                batch[:] = [b for b in batch if b[0] is not job]
            except MemoryError:
                job.error = AudioLoadError(f"{path}: out of memory while decoding", kind="too-long")
                batch[:] = [b for b in batch if b[0] is not job]
            job.done = True
            if plan is not None:  # a kept job needs its speech frames, not its samples
                for track in job.tracks:
                    track.windower.buf = track.windower._vad_rest = np.zeros(0, np.float32)
            if len(queue) > MAX_PENDING_FILES and batch:  # bound the look-ahead of packing
                self._run_batch(batch, plan)
                batch.clear()
            while queue and queue[0].done and queue[0].unscored == 0:
                job = queue.popleft()
                if plan is None:
                    yield self._finish(job)
        if batch:
            self._run_batch(batch, plan)
            batch.clear()
        while queue and plan is None:
            yield self._finish(queue.popleft())

    def _run_batch(self, batch: list[tuple[_Job, _Track, int, np.ndarray]], plan: ScoringPlan | None = None) -> None:
        """Score a batch of windows; with ``plan``, record the kept windows' features there instead."""
        import torch

        # a window shorter than the model's (a short call) is tiled to full length, as in training
        x = np.stack([item[3] if len(item[3]) == self.win else np.resize(item[3], self.win) for item in batch])
        keep = np.ones(len(batch), dtype=bool)
        if self.speech_check is not None:
            keep = self.speech_check.passes(x, self.config.vad.neural_min_share)
        logits = np.zeros(len(batch), dtype=np.float32)
        if keep.any():
            x = x[keep] + self._dither
            with torch.inference_mode():
                feats = self.frontend(torch.from_numpy(x).to(self.device))
                if plan is None:
                    logits[keep] = self.model(feats).float().cpu().numpy()
                else:
                    plan.batches.append(([(b[1], b[2]) for b, ok in zip(batch, keep) if ok], feats.cpu()))
        for (job, track, k, _), z, ok in zip(batch, logits, keep):
            if ok:
                track.logits[k] = float(z)
            else:
                track.logits[k] = None
                track.rejected.append(k)
            job.unscored -= 1

    def _finish(self, job: _Job) -> FileOutcome:
        if job.error is not None:
            return FileOutcome(job.path, error=job.error)
        return FileOutcome(job.path, results=[self._result(job, t) for t in job.tracks])

    def _result(self, job: _Job, track: _Track) -> ScoreResult:
        cfg = self.config
        sr = cfg.sample_rate
        cal = cfg.calibration
        logits = list(track.logits)
        first_stage = speech = track.windower.speech_seconds
        if track.rejected:
            spans = [(s, s + n) for s, n in zip(track.starts, track.lengths)]
            gone = [spans[k] for k in track.rejected]
            # a window that touches one of tones or music holds the start or end of them: not scored either
            near = touching(np.array(track.starts), np.array([b for _, b in spans]), gone)
            logits = [None if n else z for z, n in zip(logits, near)]
            speech = track.windower.speech_seconds_without(gone, [spans[k] for k, z in enumerate(logits)
                                                                  if z is not None])
        left_out = first_stage - speech  # what WebRTC took for speech and the Silero check did not
        scored = [(s, n, z) for s, n, z in zip(track.starts, track.lengths, logits) if z is not None]
        short = speech < cfg.min_speech_seconds
        if short and scored and cfg.short_calibration is not None:
            cal = cfg.short_calibration  # too little speech for a verdict: a low-confidence probability
        segments = [Segment(s / sr, (s + n) / sr, float(cal.probability(z))) for s, n, z in scored]
        base = dict(path=job.path or None, channel=track.channel, threshold=self.threshold,
                    duration=round(job.duration, 3), speech_seconds=round(speech, 2), segments=segments,
                    model=self.model_info)
        if job.duration < cfg.window.min_seconds:
            return ScoreResult(probability=None, verdict="inconclusive",
                               reason=f"only {job.duration:.2f} s of audio (needs {cfg.window.min_seconds:g} s)",
                               **base)
        if not scored:
            return ScoreResult(probability=None, verdict="inconclusive",
                               reason=self._short_reason(speech, left_out) if short else
                               f"speech too scattered: no window is {cfg.window.min_speech_fraction:.0%} speech",
                               **base)
        # runs of `context` consecutive windows: the call score is the highest run mean, and the flagged
        # regions are the runs at or above the threshold, so a region exists exactly when the verdict is
        # "synthetic" (hysteresis only lets a region extend over neighbouring runs a little below it)
        means, c = run_scores(np.array([z for _, _, z in scored]), cfg.aggregation)  # long calls lowered
        logit = float(means.max())
        prob = float(cal.probability(logit))
        run_starts = np.array([s.start for s in segments[: len(means)]])
        run_ends = np.array([s.end for s in segments[c - 1:]])
        regions = [Segment(a, b, p) for a, b, p in flag_regions(
            run_starts, run_ends, cal.probability(means), onset=self.threshold,
            offset=max(0.0, self.threshold - 0.1), min_duration=0.0)]
        if short:  # a score, but no verdict: the probability (if any) comes from the short clips' calibration
            return ScoreResult(probability=prob if cfg.short_calibration is not None else None,
                               verdict="inconclusive", reason=self._short_reason(speech, left_out)
                               + ("; its probability is low-confidence" if cfg.short_calibration is not None
                                  else ""), logit=logit, **base)
        verdict = "synthetic" if prob >= self.threshold else "human"
        return ScoreResult(probability=prob, verdict=verdict, regions=regions, logit=logit, **base)

    def _short_reason(self, speech: float, left_out: float) -> str:
        return (f"only {speech:.1f} s of speech found (needs {self.config.min_speech_seconds:g} s)"
                + (f"; {left_out:.1f} s of tones, music or noise left out" if left_out >= 0.05 else ""))
