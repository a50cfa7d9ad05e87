"""Timeline plots: the call's waveform envelope with the synthetic probability of each window over it."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from . import audio as audio_io

N_BINS = 2000  # envelope points across the plot


def envelope(path: str | os.PathLike, channel: int | None = None, n_bins: int = N_BINS,
             sample_rate: int = 8000) -> tuple[np.ndarray, np.ndarray]:
    """Peak envelope of a file, read block by block.

    Returns
    -------
    times : np.ndarray [shape=(k,)], seconds
    peaks : np.ndarray [shape=(k,)], in [0, 1]
    """
    meta = audio_io.info(path)
    hop = max(1, int(np.ceil(max(meta.duration, 1e-3) * sample_rate / n_bins)))
    peaks: list[np.ndarray] = []
    rest = np.zeros(0, np.float32)
    mode = "mix" if channel is None else "each"
    for block in audio_io.iter_blocks(path, sample_rate=sample_rate, channels=mode):
        x = np.concatenate([rest, np.abs(block[0 if channel is None else channel])])
        n = len(x) // hop
        peaks.append(x[: n * hop].reshape(n, hop).max(axis=1))
        rest = x[n * hop:]
    if len(rest):
        peaks.append(np.array([rest.max()], np.float32))
    p = np.concatenate(peaks) if peaks else np.zeros(1, np.float32)
    return np.arange(len(p)) * hop / sample_rate, p


def timeline(result, out: str | os.PathLike, *, title: str | None = None) -> str:
    """Write a PNG: waveform envelope (when the result has a path) with window probabilities over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 3.2), dpi=100)
    ax2 = ax.twinx()
    if result.path:
        t, p = envelope(result.path, result.channel)
        ax.fill_between(t, -p, p, color="0.75", linewidth=0)
    ax.set_ylim(-1.05, 1.05)
    ax.set_yticks([])
    ax.set_xlabel("time (s)")
    for seg in result.segments:
        color = "tab:red" if seg.probability >= result.threshold else "tab:green"
        ax2.plot([seg.start, seg.end], [seg.probability] * 2, color=color, linewidth=3, alpha=0.7,
                 solid_capstyle="butt")
    for reg in result.regions:
        ax2.axvspan(reg.start, reg.end, color="tab:red", alpha=0.12)
    ax2.axhline(result.threshold, color="k", linestyle="--", linewidth=0.8)
    ax2.set_ylim(-0.02, 1.02)
    ax2.set_ylabel("p(synthetic)")
    ax.set_xlim(0, max(result.duration, 1e-3))
    name = Path(result.path).name if result.path else "array"
    if result.channel is not None:
        name += f" [ch {result.channel}]"
    prob = "n/a" if result.probability is None else f"{result.probability:.2f}"
    ax.set_title(title or f"{name}: {result.verdict} (p={prob}, threshold {result.threshold:.2f})")
    fig.tight_layout()
    out = str(out)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
