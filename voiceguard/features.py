"""Spectral front-ends as ``nn.Module``s: raw windows in, normalised feature maps out.

The front-end's parameters are part of every checkpoint's config, so a model always gets the features it
was trained with. Features are local to their window: each window is transformed and normalised on its own
(no whole-file statistics), so a clip scored alone scores the same inside a long call.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .audio import SAMPLE_RATE


KINDS = ("lfcc", "lfb", "logmel", "mgd", "ifd")
PHASE_KINDS = ("mgd", "ifd")  # front-ends that read the phase spectrum, which the filterbanks discard


@dataclass(frozen=True)
class FeatureConfig:
    """Front-end parameters.

    kind: ``"lfcc"`` (linear-frequency cepstra with deltas), ``"lfb"`` (log linear filterbank),
    ``"logmel"`` (log mel filterbank), ``"mgd"`` (modified group delay, the phase spectrum's slope along
    frequency, pooled into linear bands; Hegde et al. 2007) or ``"ifd"`` (instantaneous frequency deviation,
    its slope along time, by the derivative-window method of Auger & Flandrin 1995, pooled the same way).
    """

    kind: str = "lfcc"
    sample_rate: int = SAMPLE_RATE  # Hz
    n_fft: int = 512  # FFT size, samples (32 ms at 16 kHz)
    win_length: int = 400  # analysis window, samples (25 ms at 16 kHz)
    hop_length: int = 160  # frame step, samples (10 ms at 16 kHz)
    n_filters: int = 70  # triangular filters between f_min and f_max
    n_coeffs: int = 20  # cepstral coefficients kept (lfcc only)
    deltas: bool = True  # append first and second time derivatives
    f_min: float = 0.0  # Hz
    f_max: float = 8000.0  # Hz
    top_db: float = 80.0  # dB; floor below each window's loudest band (neutralises digital silence)
    norm: str = "row"  # mean removed per window: "row" (each row's own, CMN) or "global" (one for the whole map)
    lifter: int = 30  # mgd / ifd only: cepstral coefficients kept for the smoothed magnitude they are divided by
    alpha: float = 0.4  # mgd / ifd only: compression exponent, sign(tau) * |tau| ** alpha

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"feature kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.norm not in ("row", "global"):
            raise ValueError(f"feature norm must be row or global, got {self.norm!r}")
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length ({self.win_length}) must not exceed n_fft ({self.n_fft})")

    @classmethod
    def of_kind(cls, kind: str, bands: int | None = None) -> "FeatureConfig":
        """The training recipes' front-end of a kind: LFCC with deltas from 70 filters, or a 60-band filterbank
        (``bands`` overrides the filter count)."""
        return cls(kind=kind, n_filters=bands or (70 if kind == "lfcc" else 60), deltas=kind == "lfcc")

    @property
    def n_features(self) -> int:
        """Rows of the feature map."""
        base = self.n_coeffs if self.kind == "lfcc" else self.n_filters
        return base * (3 if self.deltas else 1)

    def n_frames(self, n_samples: int) -> int:
        """Columns of the feature map for a window of ``n_samples``."""
        return max(0, 1 + (n_samples - self.n_fft) // self.hop_length)

    def to_dict(self) -> dict:
        return asdict(self)


class FrontEnd(nn.Module):
    """Windows [shape=(B, n), float32, at ``config.sample_rate``] -> features [shape=(B, F, T)].

    Per window and per row, the mean over time is removed (cepstral mean normalisation, ``norm="row"``):
    this takes away the recording level and a fixed channel colouring, both shortcuts in training data.
    With ``norm="global"`` one mean over the whole window's map is removed instead: the level goes, the
    long-term spectral shape (a vocoder's roll-off, and a channel's colouring with it) stays for the model.
    """

    def __init__(self, config: FeatureConfig = FeatureConfig()) -> None:
        super().__init__()
        import torchaudio.functional as AF

        self.config = config
        n_freqs = config.n_fft // 2 + 1
        if config.kind == "logmel":
            fb = AF.melscale_fbanks(n_freqs, config.f_min, config.f_max, config.n_filters, config.sample_rate,
                                    norm="slaney", mel_scale="slaney")
        else:
            fb = AF.linear_fbanks(n_freqs, config.f_min, config.f_max, config.n_filters, config.sample_rate)
        self.register_buffer("fbank", fb, persistent=False)  # (n_freqs, n_filters)
        self.register_buffer("window", torch.hann_window(config.win_length), persistent=False)
        if config.kind in PHASE_KINDS:
            # a second window whose STFT, against the plain one, gives a phase slope without unwrapping phase
            n = torch.arange(config.win_length, dtype=torch.float32)
            if config.kind == "mgd":  # time index within the frame, centred: the slope along frequency
                aux = (n - (config.win_length - 1) / 2) * self.window
            else:  # the window's derivative (periodic Hann) over 2 pi, per second: the slope along time, in Hz
                aux = config.sample_rate / (2 * config.win_length) * torch.sin(2 * torch.pi * n / config.win_length)
            self.register_buffer("aux_window", aux, persistent=False)
            self.register_buffer("band_mean", fb / fb.sum(0).clamp_min(1e-8), persistent=False)
            to_ceps, from_ceps = _lifter_basis(config.n_fft, config.lifter)
            # log power -> the low cepstrum (log magnitude = half the log power) -> -2 alpha log S, in two products
            self.register_buffer("to_ceps", 0.5 * to_ceps, persistent=False)  # (lifter, n_freqs)
            self.register_buffer("from_ceps", -2.0 * config.alpha * from_ceps, persistent=False)  # (n_freqs, lifter)
        if config.kind == "lfcc":
            dct = AF.create_dct(config.n_coeffs, config.n_filters, norm="ortho")
            self.register_buffer("dct", dct, persistent=False)  # (n_filters, n_coeffs)

    def stft(self, x: torch.Tensor) -> torch.Tensor:
        """Complex frames [shape=(B, n_freqs, T)] of windows ``x`` under the Hann window."""
        c = self.config
        if x.dim() != 2:
            raise ValueError(f"expected windows of shape (batch, samples), got {tuple(x.shape)}")
        if x.shape[-1] < c.n_fft:
            raise ValueError(f"window of {x.shape[-1]} samples is shorter than one FFT ({c.n_fft})")
        return torch.stft(x, c.n_fft, c.hop_length, c.win_length, self.window, center=False, return_complex=True)

    def forward(self, x: torch.Tensor, shared: dict | None = None) -> torch.Tensor:
        """``shared``: a dict that front-ends on one frame grid pass along for the same ``x``: each takes from it what
        another already computed from ``x`` (the Hann STFT; the smoothed power the phase kinds divide by) and
        leaves there what it computes."""
        import torchaudio.functional as AF

        c = self.config
        shared = {} if shared is None else shared
        if "stft" not in shared:
            shared["stft"] = self.stft(x)
        z = shared["stft"]
        if c.kind in PHASE_KINDS:
            feats = self._phase_slope(x, z, shared)
        else:
            spec = z.real.square() + z.imag.square()  # power, (B, n_freqs, T); 2x faster than abs().pow(2)
            bands = torch.matmul(spec.transpose(1, 2), self.fbank)  # (B, T, n_filters)
            db = 10.0 * torch.log10(bands.clamp_min(1e-10))
            db = torch.maximum(db, db.amax(dim=(1, 2), keepdim=True) - c.top_db)
            feats = torch.matmul(db, self.dct) if c.kind == "lfcc" else db  # (B, T, F0)
            feats = feats.transpose(1, 2)  # (B, F0, T)
        if c.deltas:
            d1 = AF.compute_deltas(feats, win_length=5)
            d2 = AF.compute_deltas(d1, win_length=5)
            feats = torch.cat([feats, d1, d2], dim=1)
        return feats - feats.mean(dim=(1, 2) if c.norm == "global" else 2, keepdim=True)

    def _phase_slope(self, x: torch.Tensor, z: torch.Tensor, shared: dict) -> torch.Tensor:
        """Phase slope [shape=(B, n_filters, T)], before mean removal, of frames ``z``: with Y the STFT of ``x``
        under the auxiliary window, Re(X Y*) / S^2 (mgd: the modified group delay) or Im(X Y*) / S^2 (ifd: the
        instantaneous frequency deviation), S the cepstrally smoothed magnitude of X; compressed to
        sign(tau) * |tau|^alpha and averaged within each linear band. Unchanged by the level of ``x`` (numerator
        and S^2 scale alike)."""
        c = self.config
        y = torch.stft(x, c.n_fft, c.hop_length, c.win_length, self.aux_window, center=False,
                       return_complex=True)
        key = ("log_gain", c.lifter, c.alpha)  # -2 alpha log S, the same for every phase kind of these settings
        if key not in shared:
            log_power = torch.log((z.real.square() + z.imag.square()).clamp_min(1e-12))  # (B, n_freqs, T)
            shared[key] = torch.matmul(self.from_ceps, torch.matmul(self.to_ceps, log_power))
        log_gain = shared[key]
        prod = z * y.conj()
        cross = prod.real if c.kind == "mgd" else prod.imag
        # sign(tau) |tau|^alpha with tau = cross / S^2, in the log domain: one exp, no pow
        slope = torch.copysign(torch.exp(torch.add(log_gain, torch.log(cross.abs()), alpha=c.alpha)), cross)
        return torch.matmul(slope.transpose(1, 2), self.band_mean).transpose(1, 2)  # (B, n_filters, T)


def _lifter_basis(n_fft: int, lifter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cepstral smoothing along frequency as two small products: ``to`` [shape=(lifter, n_freqs)] takes a real
    spectrum (the one-sided half of an even one) to its cepstrum's first ``lifter`` quefrencies (the inverse FFT's
    cosine sums); ``from`` [shape=(n_freqs, lifter)] takes those back to a spectrum, their mirror images included.
    The same as irfft, zeroing quefrencies ``lifter .. n_fft - lifter`` and rfft, without the two FFTs."""
    import math

    k = torch.arange(n_fft // 2 + 1, dtype=torch.float64)
    q = torch.arange(lifter, dtype=torch.float64)
    cos = torch.cos(2 * math.pi * q[:, None] * k[None, :] / n_fft)  # (lifter, n_freqs)
    bins = torch.full_like(k, 2.0)  # each bin but DC and Nyquist stands for itself and its mirror
    bins[0] = bins[-1] = 1.0
    quefs = torch.full_like(q, 2.0)
    quefs[0] = 1.0
    return (cos * bins / n_fft).float(), (cos * quefs[:, None]).T.float().contiguous()


class StackedFrontEnd(nn.Module):
    """Several front-ends on one frame grid, for an ensemble whose networks read different features:
    windows [shape=(B, n)] -> features [shape=(B, K, F, T)], front-end k's map at index k."""

    def __init__(self, configs: tuple[FeatureConfig, ...]) -> None:
        super().__init__()
        grid = {(c.sample_rate, c.n_fft, c.win_length, c.hop_length, c.n_features) for c in configs}
        if len(grid) != 1:
            raise ValueError("stacked front-ends must share sample rate, frames and number of rows")
        self.parts = nn.ModuleList(FrontEnd(c) for c in configs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared: dict = {}  # one Hann STFT for all (same frames, same window), one smoothed power for the phase kinds
        return torch.stack([part(x, shared) for part in self.parts], dim=1)


def build_frontend(configs: tuple[FeatureConfig, ...]) -> nn.Module:
    """The front-end of a checkpoint's ``front_ends``: one :class:`FrontEnd`, or a :class:`StackedFrontEnd`."""
    return FrontEnd(configs[0]) if len(configs) == 1 else StackedFrontEnd(tuple(configs))
