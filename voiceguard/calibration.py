"""Score calibration: turn raw logits into probabilities that mean what they say.

Platt scaling, ``p = sigmoid(scale * logit + bias)``, fitted by logistic regression on held-out scores and
stored in the checkpoint. The decision threshold is chosen on held-out *real* speech for a target
false-alarm rate and stored beside it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    scale: float = 1.0
    bias: float = 0.0

    def logit(self, raw: np.ndarray | float) -> np.ndarray:
        """Calibrated logit(s) of raw model logit(s)."""
        return self.scale * np.asarray(raw, dtype=np.float64) + self.bias

    def probability(self, raw: np.ndarray | float) -> np.ndarray:
        """Calibrated probability of 'synthetic', in [0, 1]."""
        return 1.0 / (1.0 + np.exp(-np.clip(self.logit(raw), -60, 60)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def fit(cls, raw: np.ndarray, labels: np.ndarray, *, prior: float | None = None) -> "Calibration":
        """Fit on raw logits and labels (1 = synthetic, 0 = human).

        ``prior``: probability of 'synthetic' the output should assume; by default the classes are
        weighted equally (a prior of 0.5), so the probability does not echo the class balance of the
        calibration set.
        """
        x = np.asarray(raw, dtype=np.float64)
        y = np.asarray(labels, dtype=np.float64)
        if x.size < 2 or len(np.unique(y)) < 2:
            raise ValueError("calibration needs scores of both classes")
        p = 0.5 if prior is None else float(prior)
        w = np.where(y == 1, p / y.mean(), (1 - p) / (1 - y.mean()))
        a, b = 1.0, 0.0
        for _ in range(100):  # Newton-Raphson on the weighted log-loss, with a small ridge on the scale
            z = np.clip(a * x + b, -60, 60)
            q = 1.0 / (1.0 + np.exp(-z))
            g = q - y
            grad = np.array([np.sum(w * g * x) + 1e-3 * (a - 1), np.sum(w * g)])
            h = w * q * (1 - q)
            hess = np.array([[np.sum(h * x * x) + 1e-3, np.sum(h * x)], [np.sum(h * x), np.sum(h) + 1e-9]])
            step = np.linalg.solve(hess, grad)
            a, b = a - step[0], b - step[1]
            if np.abs(step).max() < 1e-8:
                break
        return cls(float(a), float(b))


def threshold_for_false_alarm(probabilities_real: np.ndarray, rate: float) -> float:
    """Smallest threshold that flags at most ``rate`` of the given real-speech probabilities."""
    p = np.sort(np.asarray(probabilities_real, dtype=np.float64))
    if p.size == 0:
        raise ValueError("no real-speech scores to choose a threshold on")
    k = int(np.floor((1.0 - rate) * p.size))
    k = min(max(k, 0), p.size - 1)
    return float(np.nextafter(p[k], 1.0))
