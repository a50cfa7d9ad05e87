"""The classifier: a compact light CNN (LCNN, max-feature-map activations) over a feature map.

Input: features [shape=(B, F, T)] from :class:`voiceguard.features.FrontEnd`.
Output: one logit per window [shape=(B,)]; higher means more likely synthetic.
Any T >= 16 works (statistics pooling over time), so short calls need no padding.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import torch
from torch import nn


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "lcnn"
    n_features: int = 60  # rows of the input feature map
    channels: tuple[int, ...] = (16, 24, 32, 32)  # after each max-feature-map; first is the stem
    time_stride: int = 3  # stride of the stem along time (10 ms frames -> 30 ms)
    freq_stride: int = 1  # stride of the stem along frequency (2 for fine-resolution spectra)
    embedding: int = 64
    dropout: float = 0.3
    head: str = "linear"  # "linear" (BCE) or "ocsoftmax" (one-class softmax, Zhang et al. 2021)
    members: int = 1  # > 1: that many networks of this config (trained apart), their logits averaged
    rows: int = 0  # > 0: read only the lowest ``rows`` rows of the feature map (30 of 60 bands: 0-4 kHz)
    inputs: tuple[int, ...] = ()  # members > 1 with several front-ends: the front-end each member reads

    def __post_init__(self) -> None:
        if self.arch != "lcnn":
            raise ValueError(f"unknown architecture {self.arch!r} (this version knows 'lcnn')")
        if self.head not in ("linear", "ocsoftmax"):
            raise ValueError(f"unknown head {self.head!r} (linear or ocsoftmax)")
        if not 0 <= int(self.rows) <= int(self.n_features):
            raise ValueError(f"rows must be between 0 (all) and n_features ({self.n_features}), got {self.rows}")
        if int(self.members) < 1:
            raise ValueError(f"members must be >= 1, got {self.members}")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "inputs", tuple(int(i) for i in self.inputs))
        if self.inputs and (len(self.inputs) != int(self.members) or min(self.inputs) < 0):
            raise ValueError(f"inputs must name a front-end (0, 1, ...) for each of the {self.members} members, "
                             f"got {list(self.inputs)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        d["inputs"] = list(self.inputs)
        return d


OC_ALPHA = 20.0  # one-class softmax scale
OC_M_REAL, OC_M_FAKE = 0.9, 0.2  # cosine margins for bona fide and synthetic
OC_MID = (OC_M_REAL + OC_M_FAKE) / 2


class _MaxFeatureMapFn(torch.autograd.Function):
    """The max-feature-map under autograd: the gradient goes to the larger half through a saved boolean mask, in
    the incoming gradient's layout made that of the mask. ``torch.maximum``'s own backward compares the halves
    again, element by element across mismatched layouts: on the shipped seven networks' forward and backward pass
    over 32 windows (2 threads) it took 1.37-1.59 s, this one 0.71-0.87 s, with the same gradients."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        mask = a >= b
        ctx.save_for_backward(mask)
        return torch.maximum(a, b)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (mask,) = ctx.saved_tensors
        layout = torch.channels_last if mask.dim() == 4 and mask.is_contiguous(memory_format=torch.channels_last) \
            else torch.contiguous_format
        grad = grad.contiguous(memory_format=layout)
        to_a = grad * mask
        return torch.cat([to_a, grad - to_a], dim=1)


class MaxFeatureMap(nn.Module):
    """Split channels in two halves and keep the element-wise maximum."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return _MaxFeatureMapFn.apply(x)
        a, b = x.chunk(2, dim=1)
        return torch.maximum(a, b)


class MaxPool2x2(nn.MaxPool2d):
    """``nn.MaxPool2d(2)`` that scores by two element-wise maxima of strided views (odd sizes floored the same
    way): the same output, 1.9 against 8.8 ms (best of 15) on a stem-sized channels-last map of 32 windows on
    this CPU. Under autograd it stays the pooling kernel, whose backward is the faster one."""

    def __init__(self) -> None:
        super().__init__(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            return super().forward(x)
        h, w = x.shape[-2] // 2 * 2, x.shape[-1] // 2 * 2
        x = torch.maximum(x[..., 0:w:2], x[..., 1:w:2])
        return torch.maximum(x[..., 0:h:2, :], x[..., 1:h:2, :])


def _mfm_conv(c_in: int, c_out: int, k: int, stride: tuple[int, int] = (1, 1)) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, 2 * c_out, k, stride=stride, padding=k // 2), MaxFeatureMap())


class LCNN(nn.Module):
    def __init__(self, config: ModelConfig = ModelConfig()) -> None:
        super().__init__()
        self.config = config
        ch = config.channels
        self.n_rows = config.rows or config.n_features
        self.input_norm = nn.BatchNorm1d(self.n_rows)
        layers: list[nn.Module] = [_mfm_conv(1, ch[0], 3, stride=(config.freq_stride, config.time_stride)),
                                   MaxPool2x2()]
        f = (self.n_rows + config.freq_stride - 1) // config.freq_stride // 2
        for c_in, c_out in zip(ch[:-1], ch[1:]):
            layers += [_mfm_conv(c_in, c_in, 1), nn.BatchNorm2d(c_in), _mfm_conv(c_in, c_out, 3),
                       MaxPool2x2(), nn.BatchNorm2d(c_out)]
            f //= 2
        self.body = nn.Sequential(*layers)
        dim = ch[-1] * f
        head: list[nn.Module] = [nn.Linear(2 * dim, config.embedding), nn.BatchNorm1d(config.embedding),
                                 nn.LeakyReLU(0.1), nn.Dropout(config.dropout)]
        if config.head == "linear":
            head.append(nn.Linear(config.embedding, 1))
        else:  # one-class softmax: cosine to a learned "bona fide" direction
            self.center = nn.Parameter(torch.randn(config.embedding) / config.embedding**0.5)
        self.head = nn.Sequential(*head)
        # channels-last convolutions and pooling run about 3x faster on CPU here (measured); same results
        self.to(memory_format=torch.channels_last)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(feats))

    def embed(self, feats: torch.Tensor) -> torch.Tensor:
        """The window embedding [shape=(B, config.embedding)] the output is computed from."""
        x = self.input_norm(feats[:, :self.n_rows]).unsqueeze(1)  # (B, 1, F, T)
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.body(x)  # (B, C, F', T')
        x = x.flatten(1, 2)  # (B, C*F', T')
        stats = torch.cat([x.mean(dim=2), x.std(dim=2, unbiased=False)], dim=1)
        return self.head[:-1](stats) if self.config.head == "linear" else self.head(stats)

    def classify(self, e: torch.Tensor) -> torch.Tensor:
        """Logits [shape=(B,)] from embeddings."""
        if self.config.head == "linear":
            return self.head[-1](e).squeeze(1)
        cos = torch.nn.functional.cosine_similarity(e, self.center.unsqueeze(0), dim=1)
        return OC_ALPHA * (OC_MID - cos)  # > 0: further from bona fide than the margin midpoint

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Training loss for this head; ``labels`` 1 = synthetic, 0 = human (float)."""
        if self.config.head == "linear":
            return torch.nn.functional.binary_cross_entropy_with_logits(logits, labels)
        cos = OC_MID - logits / OC_ALPHA
        # bona fide pulled above OC_M_REAL, synthetic pushed below OC_M_FAKE
        margin = torch.where(labels > 0.5, cos - OC_M_FAKE, OC_M_REAL - cos)
        return torch.nn.functional.softplus(OC_ALPHA * margin).mean()


class MeanEnsemble(nn.Module):
    """``config.members`` networks of one config, each trained on its own (another seed, other augmentation),
    scored on the same features; the window logit is the mean of theirs. Averaging cuts the part of each
    network's errors that comes from its particular run, which is what varies most on unseen generators."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        single = replace(config, members=1, inputs=())
        self.members = nn.ModuleList(LCNN(single) for _ in range(config.members))

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        """feats [shape=(B, F, T)], read by every member, or [shape=(B, K, F, T)] from a
        :class:`~voiceguard.features.StackedFrontEnd`, member i reading map ``config.inputs[i]``."""
        if feats.dim() == 4:
            if not self.config.inputs:
                raise ValueError("stacked features need the members' inputs in the model config")
            return torch.stack([m(feats[:, i]) for m, i in zip(self.members, self.config.inputs)]).mean(dim=0)
        return torch.stack([m(feats) for m in self.members]).mean(dim=0)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.members[0].loss(logits, labels)  # same head for all; used when fine-tuning the whole


def build_model(config: ModelConfig) -> nn.Module:
    """Model for a config: one LCNN, or a mean of ``config.members`` of them."""
    return LCNN(config) if config.members == 1 else MeanEnsemble(config)


def combine(models: list[nn.Module], inputs: tuple[int, ...] = ()) -> nn.Module:
    """One :class:`MeanEnsemble` from trained single networks of the same config (their weights copied);
    ``inputs``: the front-end each one reads, when they read different ones (see ``ModelConfig.inputs``)."""
    configs = {m.config for m in models}
    if len(models) < 2 or len(configs) != 1 or any(m.config.members != 1 for m in models):
        raise ValueError("combine needs two or more single networks of the same architecture")
    ens = MeanEnsemble(replace(models[0].config, members=len(models), inputs=tuple(inputs)))
    for dst, src in zip(ens.members, models):
        dst.load_state_dict(src.state_dict())
    return ens.eval()
