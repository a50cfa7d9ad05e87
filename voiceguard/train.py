"""Training and fine-tuning.

Data path: :class:`voiceguard.data.Item` lists -> :class:`ClipBank` (decoded once, 16 kHz, leading/trailing
non-speech trimmed alike for both classes) -> :class:`CropStream` (label-balanced, source/speaker-capped
random crops, each through the label-blind :class:`voiceguard.augment.Augmenter`) -> front-end + model.

Validation runs the real inference path (:meth:`voiceguard.detector.Detector.score_arrays`: VAD, windows,
aggregation) on clean and telephone-coded copies of held-out clips, so the number that picks the best epoch
is the number a user would see. Train/validation splits are by speaker and source, never by file.
"""
from __future__ import annotations

import copy
import itertools
import logging
import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from . import audio as audio_io
from .augment import Augmenter, AugmentConfig, change_speed, fit_length, telephone_copy
from .calibration import Calibration, threshold_for_false_alarm
from .checkpoint import CheckpointConfig
from .data import Item
from .errors import DataError, VoiceGuardError
from .vad import speech_mask

log = logging.getLogger(__name__)

TELEPHONE_VAL_CODECS = ("ulaw", "gsm", "alaw", "mp3_8")  # cycled over validation clips


@dataclass
class TrainConfig:
    epochs: int = 30
    steps_per_epoch: int = 150
    batch_size: int = 32
    lr: float = 2e-3
    # share of the steps over which the learning rate rises to its peak, then anneals (None: 0.1 from scratch,
    # 0 when starting from a model)
    warmup: float | None = None
    weight_decay: float = 1e-3
    patience: int = 6  # epochs without a better validation EER before stopping
    seed: int = 0
    workers: int | None = None  # processes preparing augmented crops (None: default_crop_workers(device))
    l2sp: float = 0.0  # pull towards the starting weights (fine-tuning)
    distill: float = 0.0  # > 0 (fine-tuning): keep the replayed examples' logits near the starting model's (see train)
    # > 0 (with train's ``kd_teacher``): this share of the detection loss is taken against the teacher's
    # probabilities on the same augmented crops instead of the labels (knowledge distillation, Hinton et al. 2015)
    kd: float = 0.0
    replay_fraction: float = 0.0  # share of each batch drawn from the replay bank (fine-tuning)
    # fine-tuning: after training, also try these mixes of the fine-tuned and the starting weights (the share
    # of the fine-tuned ones) and keep the best on validation (see finetune); () keeps the fine-tuned weights
    interpolate: tuple = ()
    ema: float = 0.0  # > 0: validate and keep an exponential moving average of the weights (this decay per step)
    pair_fraction: float = 0.0  # share of draws that take a copy-synthesis with its real original (see CropStream)
    # > 0: share of draws that are view pairs, one crop without a channel and through a telephone channel, and
    # the weight of a loss pulling the telephone view's probability towards the clean view's (see CropStream)
    view_fraction: float = 0.0
    consistency: float = 0.0
    freq_mask: float = 0.0  # > 0: per example, blank one random band of up to this share of the feature rows
    mixup: float = 0.0  # > 0: mix each batch's features pairwise, weights ~ Beta(mixup, mixup) (see mix_batch)
    adversary: float = 0.0  # > 0: weight of a gradient-reversed classifier of real examples' source (see train)
    adversary_fakes: bool = False  # the adversary also tells synthetic examples' sources apart (within their class)
    sam: float = 0.0  # > 0: sharpness-aware minimisation, weights moved this far before each step (see sam_step)
    balance: str = "sqrt"  # how training clips are weighted across sources and speakers (ClipBank.sampling_weights)
    false_alarm_target: float = 0.02  # threshold: at most this share of held-out real clips flagged
    max_seconds: float | None = None  # wall-time budget: no epoch starts that would end past it
    # with max_seconds: when the epochs run slower than the budget allows for (say seven networks on two CPU
    # cores), the learning rate anneals over the epochs that fit instead of being cut off still high
    fit_budget: bool = False
    device: str | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:  # before any data is decoded
        if self.warmup is not None and not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup is a share of the steps in [0, 1), got {self.warmup}")
        if not 0.0 <= self.kd <= 1.0:
            raise ValueError(f"kd is a share of the detection loss in [0, 1], got {self.kd}")
        if not 0.0 <= self.view_fraction <= 1.0:
            raise ValueError(f"view_fraction is a share of the draws in [0, 1], got {self.view_fraction}")
        if self.consistency > 0 and not self.view_fraction > 0:
            raise ValueError("consistency needs view pairs (view_fraction > 0)")
        if self.consistency > 0 and self.mixup > 0:
            raise ValueError("consistency and mixup do not go together (mixup blends the views with others)")


# ---------------------------------------------------------------------------- splitting
def group_of(item: Item) -> str:
    """The unit a split must not cut: the speaker within its source, or the source when unknown."""
    return f"{item.source}/{item.speaker}" if item.speaker else f"{item.source}/?{item.generator}"


def split_by_group(items: Sequence[Item], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[Item], list[Item]]:
    """Split so that no speaker (or source, when speakers are unknown) is on both sides.

    Groups are drawn at random per label until each label's validation share reaches ``val_fraction``.
    """
    rng = np.random.default_rng(seed)
    val_groups: set[str] = set()
    for label in (0, 1):
        groups = Counter(group_of(it) for it in items if it.label == label)
        if len(groups) < 2:
            continue
        order = list(groups)
        rng.shuffle(order)
        total, taken = sum(groups.values()), 0
        for g in order:
            if taken >= val_fraction * total:
                break
            if g in val_groups:
                continue
            val_groups.add(g)
            taken += groups[g]
    train = [it for it in items if group_of(it) not in val_groups]
    val = [it for it in items if group_of(it) in val_groups]
    return train, val


def split_new_data(items: Sequence[Item], val_fraction: float, seed: int = 0
                   ) -> tuple[list[Item], list[Item], list[str]]:
    """:func:`split_by_group`, then, for a label whose files all share one speaker group (a flat folder of one
    voice or generator, speakers unknown), a random ``val_fraction`` of its files: the only split such data
    allows. Returns (train, validation, notes in words for the user)."""
    train_items, val = split_by_group(items, val_fraction, seed)
    notes = []
    for label in (0, 1):
        files = [it for it in train_items if it.label == label]
        if any(it.label == label for it in val) or len(files) < 2:
            continue
        rng = np.random.default_rng(seed + 17 * (label + 1))
        k = max(1, int(round(val_fraction * len(files))))
        held = {files[i].path for i in rng.choice(len(files), k, replace=False)}
        val += [it for it in files if it.path in held]
        train_items = [it for it in train_items if it.path not in held]
        notes.append(f"the {('real', 'synthetic')[label]} files share one speaker group "
                     f"({group_of(files[0])}), so {k} of them were held out at random, by file; put each "
                     "speaker or voice in its own sub-folder (or give a speaker column) to hold out whole speakers")
    return train_items, val, notes


# ---------------------------------------------------------------------------- clips in memory
def copy_pairs(items: Sequence[Item]) -> list[tuple[int, int]]:
    """(synthetic index, real index) for each copy-synthesis in ``items`` whose real original is there too.

    A synthetic item names its original in the manifest column ``orig_path`` (as written by
    ``voiceguard synth`` and the scripts), relative to wherever that clip's manifest lives; it is
    matched on the end of the real items' paths.
    """
    by_name: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        if it.label == 0:
            by_name.setdefault(Path(it.path).name, []).append(i)
    out = []
    for i, it in enumerate(items):
        orig = str(it.extra.get("orig_path") or "").replace("\\", "/").lstrip("./")
        if it.label != 1 or not orig:
            continue
        for j in by_name.get(Path(orig).name, []):
            if Path(items[j].path).as_posix().endswith(orig):
                out.append((i, j))
                break
    return out


#: ``balance="source"``: a source with this many clips or more weighs as much as any other
BALANCE_FULL = 30


class ClipBank:
    """Decoded clips (16 kHz mono int16), trimmed to their first..last speech frame.

    Files that cannot be read, or hold under ``min_speech`` seconds of speech, are skipped and counted
    in ``skipped`` (reason -> count).
    """

    def __init__(self, items: Sequence[Item], *, sample_rate: int = audio_io.SAMPLE_RATE,
                 min_speech: float = 0.5, max_seconds: float = 60.0,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.sample_rate = sample_rate
        self.items: list[Item] = []
        self.clips: list[np.ndarray] = []
        self.offsets: list[int] = []  # where each kept clip starts in its file, in samples
        self.skipped: Counter = Counter()
        for i, it in enumerate(items):
            if progress:
                progress(i, len(items))
            try:
                x = audio_io.load(it.path, sample_rate=sample_rate)[0]
            except VoiceGuardError as err:
                log.warning("skipping %s", err)
                self.skipped[err.kind] += 1
                continue
            mask = speech_mask(x, sample_rate)
            idx = np.flatnonzero(mask)
            if len(idx) < min_speech * sample_rate:
                self.skipped["too-little-speech"] += 1
                continue
            pad = int(0.1 * sample_rate)
            start = max(0, idx[0] - pad)
            x = x[start: idx[-1] + pad][: int(max_seconds * sample_rate)]
            self.offsets.append(start)
            peak = float(np.abs(x).max()) or 1.0
            self.clips.append((x / peak * 32000).astype(np.int16))
            self.items.append(it)
        self.labels = np.array([it.label for it in self.items], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.clips)

    def seconds(self) -> float:
        return sum(len(c) for c in self.clips) / self.sample_rate

    def signal(self, i: int) -> np.ndarray:
        return self.clips[i].astype(np.float32) / 32768.0

    def pairs(self) -> list[tuple[int, int]]:
        """(synthetic index, real index) for each copy-synthesis whose real original is in this bank
        (see :func:`copy_pairs`)."""
        return copy_pairs(self.items)

    def sampling_weights(self, balance: str = "sqrt") -> np.ndarray:
        """Per-clip weights, so that large sources and talkative speakers (RAVDESS's two sentences, the
        spoken digits) cannot dominate.

        ``"sqrt"``: each source counts as sqrt(#clips), each speaker within it likewise.
        ``"source"``: every source with at least ``BALANCE_FULL`` clips weighs the same (smaller ones in
        proportion to their clips), its speakers equally within it, their clips equally within them.
        """
        src = Counter(it.source for it in self.items)
        spk = Counter(group_of(it) for it in self.items)
        if balance == "sqrt":
            w = np.array([1.0 / math.sqrt(src[it.source]) / math.sqrt(spk[group_of(it)]) for it in self.items])
        elif balance == "source":  # per class: a source's real and synthetic clips are weighed apart
            key = [(it.label, it.source) for it in self.items]
            n_src = Counter(key)
            n_spk = Counter(k for k, _ in {(k, group_of(it)) for k, it in zip(key, self.items)})
            w = np.array([min(n_src[k], BALANCE_FULL) / BALANCE_FULL / n_spk[k] / spk[group_of(it)]
                          for k, it in zip(key, self.items)])
        else:
            raise ValueError(f"unknown balance {balance!r} (sqrt or source)")
        sec = np.array([min(len(c) / self.sample_rate, 8.0) for c in self.clips])
        return w * np.sqrt(sec)  # longer clips hold more distinct crops


def crop(x: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """A random n-sample crop; shorter clips are tiled (as the detector tiles short calls)."""
    if len(x) <= n:
        return np.resize(np.roll(x, int(rng.integers(0, len(x)))), n) if len(x) < n else x
    a = int(rng.integers(0, len(x) - n + 1))
    return x[a: a + n]


class CropStream:
    """Endless stream of augmented (crop [shape=(n,)], label, domain) examples, half real, half synthetic.

    ``domain`` is the index of a real example's source among the real sources of the bank and the replay bank
    (:attr:`domains`), -1 for synthetic examples: what the source adversary (``TrainConfig.adversary``) tries
    to tell. With ``fake_domains``, synthetic examples get their source's index too, after the real ones (the
    two classes' sources kept apart), so the adversary works within both classes.

    With ``pair_fraction`` > 0, that share of the draws is a *matched pair*: a copy-synthesis and the real
    clip it was made from, cropped at the same place and put through the very same random channel
    (same augmentation seed), one after the other. Speaker, words, room and channel are then identical on
    both sides and only the synthesis differs, so the model cannot score the recording conditions.

    With ``view_fraction`` > 0, that share of the draws is a *view pair*: one crop put through the same random
    augmentation twice, once without a channel (``view`` 1) and once through the telephone channel (``view``
    2), one after the other. Training pulls the telephone view's logit towards the clean view's
    (``TrainConfig.consistency``), so that a telephone line changes the score less.

    Each example is ``(crop, label, domain, replayed, view)``, ``view`` 0 outside view pairs.
    """

    def __init__(self, bank: ClipBank, crop_samples: int, augment: AugmentConfig, seed: int,
                 replay: ClipBank | None = None, replay_fraction: float = 0.0,
                 pair_fraction: float = 0.0, balance: str = "sqrt", fake_domains: bool = False,
                 view_fraction: float = 0.0) -> None:
        self.bank, self.replay, self.replay_fraction = bank, replay, replay_fraction
        self.balance = balance
        #: the real sources of the bank (and of the replay bank), in the order of the domain indices
        self.domains = sorted({it.source for b in (bank, replay) if b is not None for it in b.items if it.label == 0})
        if fake_domains:  # then the synthetic sources, named apart from the real ones of the same demo page
            self.domains += sorted({f"synthetic:{it.source}" for b in (bank, replay) if b is not None
                                    for it in b.items if it.label == 1})
        self.fake_domains = fake_domains
        self._domain_of = {s: d for d, s in enumerate(self.domains)}
        self.pair_fraction = pair_fraction
        self.view_fraction = view_fraction
        self.n = crop_samples
        self.augment_config = augment
        self.seed = seed

    @staticmethod
    def _tables(bank: ClipBank, balance: str = "sqrt") -> dict[int, tuple[np.ndarray, np.ndarray]]:
        w = bank.sampling_weights(balance)
        out = {}
        for label in (0, 1):
            idx = np.flatnonzero(bank.labels == label)
            if len(idx):
                out[label] = (idx, w[idx] / w[idx].sum())
        return out

    def __iter__(self) -> Iterator[tuple[np.ndarray, int, int, bool, int]]:
        rng = np.random.default_rng(self.seed)
        aug = Augmenter(self.augment_config, seed=int(rng.integers(2**31)))
        tables = self._tables(self.bank, self.balance)
        replay_tables = self._tables(self.replay, self.balance) if self.replay is not None and len(self.replay) else {}
        pairs = self.bank.pairs() if self.pair_fraction > 0 else []
        # a pair yields two examples: draw pair events at q so that pair_fraction of examples come from pairs
        q = self.pair_fraction / (2 - self.pair_fraction) if pairs else 0.0
        v = self.view_fraction / (2 - self.view_fraction)  # likewise for view pairs
        while True:
            if q and rng.random() < q:
                f, r = pairs[int(rng.integers(len(pairs)))]
                yield from self._pair(f, r, aug, rng)
                continue
            views = bool(v) and rng.random() < v
            label = int(rng.integers(0, 2))
            # the replay bank also supplies a class the new data lacks (e.g. fine-tuning on fakes only)
            use_replay = bool(replay_tables) and (rng.random() < self.replay_fraction
                                                  or (label not in tables and label in replay_tables))
            bank, tab = (self.replay, replay_tables) if use_replay else (self.bank, tables)
            if label not in tab:
                label = 1 - label
            idx, p = tab[label]
            i = int(rng.choice(idx, p=p))
            x, d = self._crop(bank.signal(i), rng), self._domain(bank.items[i])
            if not views:
                yield aug(x), label, d, use_replay, 0
                continue
            seed = int(rng.integers(2**31))
            for view, channel in ((1, "none"), (2, "telephone")):
                aug.rng = np.random.default_rng(seed)
                yield aug(x, channel=channel), label, d, use_replay, view
            aug.rng = np.random.default_rng(int(rng.integers(2**31)))

    def _domain(self, it: Item) -> int:
        """The adversary's label of an example (see the class docstring)."""
        if it.label == 0:
            return self._domain_of[it.source]
        return self._domain_of[f"synthetic:{it.source}"] if self.fake_domains else -1

    def _crop(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """A random crop of ``n`` samples; with ``augment.p_speed``, sometimes one of ``n * factor`` samples
        played ``factor`` times faster (the same for real and synthetic clips)."""
        c = self.augment_config
        if c.p_speed and rng.random() < c.p_speed:
            f = float(rng.uniform(*c.speed))
            y = change_speed(crop(x, int(round(self.n * f)), rng), f, self.bank.sample_rate)
            return fit_length(y, self.n)
        return crop(x, self.n, rng)

    def _pair(self, f: int, r: int, aug: Augmenter, rng: np.random.Generator):
        bank, n = self.bank, self.n
        xf, xr = bank.signal(f), bank.signal(r)
        shift = bank.offsets[f] - bank.offsets[r]  # fake sample k is real sample k + shift
        lo, hi = max(0, -shift), min(len(xf), len(xr) - shift) - n  # starts valid in both clips
        if hi < lo:  # shorter than a crop: tile both from their common start
            a = max(0, -shift)
            cf, cr = xf[a:], xr[a + shift:]
            if not len(cf) or not len(cr):
                cf, cr = xf, xr
            cf, cr = crop(cf, n, rng), crop(cr, n, rng)
        else:
            a = int(rng.integers(lo, hi + 1))
            cf, cr = xf[a: a + n], xr[a + shift: a + shift + n]
        seed = int(rng.integers(2**31))
        for x, label, d in ((cr, 0, self._domain(bank.items[r])), (cf, 1, self._domain(bank.items[f]))):
            aug.rng = np.random.default_rng(seed)
            yield aug(x), label, d, False, 0
        aug.rng = np.random.default_rng(int(rng.integers(2**31)))


def default_crop_workers(device: str) -> int:
    """Crop-preparing processes used when none are asked for: 1 on the CPU (the model's arithmetic takes the
    other core of a 2-core machine), and on a GPU one per spare CPU core, at most 8. One process prepares an
    augmented 4 s crop in about 17 ms on the 2-core development machine, 21 s of a fine-tuning epoch's 1,280
    crops: about the whole epoch time seen on an H200, where the model's arithmetic takes far less."""
    import os

    if not str(device).startswith("cuda"):
        return 1
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def _batches(stream: CropStream, batch_size: int, workers: int, seed: int):
    """Batches of (float32 [B, n], float32 [B], int64 [B], bool [B], int64 [B]: crops, labels, domains,
    replayed, views) from ``workers`` processes (0: in this process)."""
    import torch
    from torch.utils.data import DataLoader, IterableDataset

    class _DS(IterableDataset):
        def __iter__(self_inner):
            info = torch.utils.data.get_worker_info()
            s = copy.copy(stream)
            s.seed = seed * 1000 + (info.id if info else 0) + 1
            return iter(s)

    loader = DataLoader(_DS(), batch_size=batch_size, num_workers=workers,
                        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
                        worker_init_fn=lambda _: torch.set_num_threads(1))
    for x, y, d, r, v in loader:
        yield x.float(), y.float(), d.long(), r.bool(), v.long()


class SourceAdversary:
    """Domain-adversarial training over the sources of the real examples (as in Ganin & Lempitsky 2015, and
    the "aggregation" of real domains in Xie et al. 2023 for spoofing detection).

    A linear classifier learns to tell a real example's source (corpus, recording set-up) from the model's
    embedding; its gradient reaches the model reversed, so the model unlearns what tells real sources apart
    (microphone, room, codec, speaking style) and keeps what tells real from synthetic. Synthetic examples
    are left out: different generators leave different traces, which the model should keep apart (unless
    ``TrainConfig.adversary_fakes``: then it also tells the synthetic sources apart, within their class).
    The weight ramps up from 0 as 2 / (1 + exp(-10 p)) - 1 over the run's progress p.
    """

    def __init__(self, embedding: int, n_domains: int, weight: float, total_steps: int, device) -> None:
        import torch

        class GradReverse(torch.autograd.Function):
            """Identity forward; the gradient times -scale backward."""

            @staticmethod
            def forward(ctx, x, scale: float):
                ctx.scale = scale
                return x.view_as(x)

            @staticmethod
            def backward(ctx, grad):
                return -ctx.scale * grad, None

        self.reverse = GradReverse.apply
        self.classifier = torch.nn.Linear(embedding, n_domains).to(device)
        self.weight, self.total_steps, self.step = weight, max(1, total_steps), 0

    def loss(self, e, domains, advance: bool = True):
        import torch

        self.step += int(advance)
        real = domains >= 0
        if not bool(real.any()):
            return e.new_zeros(())
        p = min(1.0, self.step / self.total_steps)
        lam = self.weight * (2.0 / (1.0 + math.exp(-10.0 * p)) - 1.0)
        reversed_e = self.reverse(e[real], lam)
        return torch.nn.functional.cross_entropy(self.classifier(reversed_e), domains[real])


# ---------------------------------------------------------------------------- validation
@dataclass
class ValSet:
    """Held-out clips, clean and as telephone copies, with their items."""

    items: list[Item]
    signals: list[np.ndarray]
    condition: list[str]  # "clean" | "telephone"
    #: windows and features of the signals, kept by :func:`score_valset` for the next scoring (False: too large)
    plan: object = field(default=None, repr=False, compare=False)
    #: True for a clip's second and further telephone copies (``build(copies=...)``); empty: none such
    extra: list[bool] = field(default_factory=list)

    @classmethod
    def build(cls, bank: ClipBank, *, telephone: bool = True, copies: int = 1,
              max_seconds: float = 20.0) -> "ValSet":
        """Each clip of ``bank`` clean and through ``copies`` of the ``TELEPHONE_VAL_CODECS`` (cycled over the
        clips, so that one copy per clip spreads the codecs; ``copies=len(TELEPHONE_VAL_CODECS)``: through every
        one, which makes a comparison of two models on the telephone condition far less a matter of which clip
        drew which codec)."""
        items, sigs, cond, extra = [], [], [], []
        n = len(TELEPHONE_VAL_CODECS)
        for i in range(len(bank)):
            x = bank.signal(i)[: int(max_seconds * bank.sample_rate)]
            items.append(bank.items[i])
            sigs.append(x)
            cond.append("clean")
            extra.append(False)
            for k in range(min(copies, n) if telephone else 0):
                items.append(bank.items[i])
                sigs.append(telephone_copy(x, TELEPHONE_VAL_CODECS[(i + k) % n]))
                cond.append("telephone")
                extra.append(k > 0)
        return cls(items, sigs, cond, extra=extra if any(extra) else [])

    @staticmethod
    def join(a: "ValSet", b: "ValSet | None") -> "ValSet":
        if b is None:
            return a
        extra = (a.extra or [False] * len(a.items)) + (b.extra or [False] * len(b.items)) if a.extra or b.extra else []
        return ValSet(a.items + b.items, a.signals + b.signals, a.condition + b.condition, extra=extra)

    @property
    def labels(self) -> np.ndarray:
        return np.array([it.label for it in self.items])

    @property
    def primary(self) -> np.ndarray:
        """Mask of the clean clips and their first telephone copies: one copy per clip, as ``copies=1`` builds."""
        return ~np.array(self.extra, dtype=bool) if self.extra else np.ones(len(self.items), dtype=bool)

    def subset(self, mask: np.ndarray) -> "ValSet":
        idx = np.flatnonzero(mask)
        extra = [self.extra[i] for i in idx] if self.extra else []
        return ValSet([self.items[i] for i in idx], [self.signals[i] for i in idx],
                      [self.condition[i] for i in idx], extra=extra if any(extra) else [])


def score_valset(detector, val: ValSet, *, short: bool = False):
    """Raw call-level logits through the inference path, NaN where inconclusive. ``short``: return
    ``(logits, short_logits)``, the second holding the logits of the clips left inconclusive for too little
    speech that still had a window scored (NaN elsewhere), on which the short-clip calibration is fitted."""
    out, out_short = [], []
    # the windows, speech checks and features do not change with the weights: made once, then only the
    # networks run (a training run scores its validation set after every epoch)
    if val.plan is not False and not detector.can_rescore(val.plan):
        val.plan = detector.prepare_arrays(val.signals, audio_io.SAMPLE_RATE) or False
    outcomes = detector.rescore(val.plan) if val.plan is not False else \
        detector.score_arrays(val.signals, audio_io.SAMPLE_RATE)
    for o in outcomes:
        r = o.results[0] if o.ok else None
        z = np.nan if r is None or r.logit is None else r.logit
        out.append(np.nan if r is None or r.verdict == "inconclusive" else z)
        out_short.append(z if r is not None and r.verdict == "inconclusive" else np.nan)
    logits = np.array(out, dtype=np.float64)
    return (logits, np.array(out_short, dtype=np.float64)) if short else logits


def val_metrics(logits: np.ndarray, val: ValSet) -> dict:
    from .metrics import eer

    y = val.labels
    res = {}
    for cond in ("all", "clean", "telephone"):
        m = np.isfinite(logits) & (np.array(val.condition) == cond if cond != "all" else True)
        if m.sum() and len(np.unique(y[m])) == 2:
            res[f"eer_{cond}"] = float(eer(logits[m], y[m])[0])
    res["n"] = int(np.isfinite(logits).sum())
    return res


def val_change(before: np.ndarray, after: np.ndarray, val: ValSet) -> dict | None:
    """How the pooled EER of ``val`` went from the ``before`` logits to the ``after`` ones, with a paired bootstrap
    interval (:func:`voiceguard.metrics.eer_change`) in which a clip and its telephone copies are drawn together;
    None without both classes scored."""
    from .metrics import eer_change

    m = np.isfinite(before) & np.isfinite(after)
    y = val.labels[m]
    if len(np.unique(y)) < 2:
        return None
    return eer_change(before[m], after[m], y, [it.path for it, k in zip(val.items, m) if k])


# ---------------------------------------------------------------------------- the loop
def view_consistency_loss(logits, clean, telephone):
    """Cross-entropy of the telephone views' logits against the clean views' probabilities, which are held
    fixed: the telephone view learns to score as its clean view does, not the other way round (a telephone
    line removes evidence; the clean view has it all)."""
    import torch

    target = torch.sigmoid(logits[clean].detach().float())
    return torch.nn.functional.binary_cross_entropy_with_logits(logits[telephone].float(), target)


def mask_bands(feats, max_fraction: float, generator):
    """SpecAugment-style frequency masking: per example, one random band of 0..``max_fraction`` of the rows
    is set to zero, the per-row mean after normalisation. A model that
    cannot rely on one band for its decision has to use cues spread over the spectrum, which carry better to
    generators whose artefacts sit elsewhere. feats [shape=(B, F, T)] or [shape=(B, K, F, T)] (the same
    band in each front-end's map); returns a new tensor."""
    import torch

    b, f = feats.shape[0], feats.shape[-2]
    width = torch.randint(0, max(1, int(max_fraction * f)) + 1, (b,), generator=generator)
    start = (torch.rand(b, generator=generator) * (f - width + 1)).long()
    rows = torch.arange(f)
    keep = ~((rows[None, :] >= start[:, None]) & (rows[None, :] < (start + width)[:, None]))
    keep = keep.reshape(b, *[1] * (feats.dim() - 3), f, 1)
    return feats * keep.to(feats.device, feats.dtype)


def mix_batch(feats, labels, domains, alpha: float, rng: np.random.Generator):
    """Mixup (Zhang et al. 2018) on features: each example is blended with another of the batch,
    ``lam * a + (1 - lam) * b`` with ``lam ~ Beta(alpha, alpha)`` per example, and its label blended alike
    (a soft target between 0 and 1). A decision that has to vary smoothly between examples of different
    sources and classes leans less on cues that single out one recording set-up. The adversary's domain
    label is that of the larger part. Returns new (feats, labels, domains); the inputs are left untouched."""
    import torch

    b = feats.shape[0]
    lam_np = rng.beta(alpha, alpha, b)
    perm_np = rng.permutation(b)

    def blend(t):  # lam * t + (1 - lam) * t[perm], on t's device
        lam = torch.from_numpy(lam_np).to(t.device, t.dtype).reshape(-1, *[1] * (t.dim() - 1))
        return lam * t + (1 - lam) * t[torch.from_numpy(perm_np).to(t.device)]

    larger = torch.from_numpy(np.where(lam_np >= 0.5, np.arange(b), perm_np)).to(domains.device)
    return blend(feats), blend(labels), domains[larger]


@dataclass
class TrainResult:
    model: object
    config: CheckpointConfig
    history: list[dict]
    val_logits: np.ndarray | None  # validation call logits of the returned (best) model
    initial_logits: np.ndarray | None = None  # the same for the starting model, when one was given
    best_epoch: int = 0  # the epoch returned (0: the starting weights, when no epoch beat them)


def sam_step(model, params, rho: float, loss_fn) -> None:
    """Sharpness-aware minimisation (Foret et al. 2021): replace the gradients in ``params`` (already
    computed at the current weights) by those at the weights moved ``rho`` along them, the worst nearby
    point to first order, so the optimiser's step favours flat minima, which tend to carry better to unseen
    data. The weights are restored afterwards; batch-norm running statistics are not updated by the second
    pass."""
    import torch

    with torch.no_grad():
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        norm = torch.norm(torch.stack([g.norm(2) for g in grads]), 2)
        scale = rho / (float(norm) + 1e-12)
        moved = []
        for p in params:
            if p.grad is not None:
                e = p.grad * scale
                p.add_(e)
                moved.append((p, e))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.momentum = 0.0  # running statistics stay as the first pass left them
    try:
        for p in params:
            p.grad = None
        loss_fn().backward()
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom
        with torch.no_grad():
            for p, e in moved:
                p.sub_(e)


def last_epoch_in_budget(planned: int, epoch: int, budget: float, elapsed: float, took: float) -> int:
    """The last epoch to run, at most ``planned``, when ``epoch`` ended ``elapsed`` seconds into a ``budget``
    and took ``took`` seconds (later epochs assumed as long). ``epoch`` itself when none more fits."""
    fits = int(max(0.0, budget - elapsed) // max(took, 1e-9))
    return min(planned, epoch + fits)


def anneal_over(opt, steps: int):
    """A schedule that takes each parameter group's learning rate from where it is now down to about zero in
    ``steps`` steps (the annealing half of a one-cycle schedule, as a fresh one)."""
    import torch

    lrs = [g["lr"] for g in opt.param_groups]
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lrs, total_steps=max(2, steps), pct_start=0.0)


def _freeze(model):
    """``model`` with gradients turned off (a teacher: its outputs are targets, never trained)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def train(
    train_bank: ClipBank,
    val: ValSet,
    *,
    config: TrainConfig | None = None,
    base: CheckpointConfig | None = None,
    init_model=None,
    replay_bank: ClipBank | None = None,
    progress: Callable[[dict], None] | None = None,
    select: Callable[[np.ndarray, np.ndarray | None], float] | None = None,
    describe: Callable[[np.ndarray], dict] | None = None,
    tiebreak: Callable[[np.ndarray], float] | None = None,
    kd_teacher=None,
) -> TrainResult:
    """Train (or fine-tune, when ``init_model`` is given) and return the best model by validation EER.

    ``kd_teacher``, with ``config.kd > 0``: a trained model of the same features (say, the shipped mean of
    three networks) whose probabilities on each augmented crop replace the labels for ``config.kd`` of the
    detection loss, so that one network can learn what several know.

    ``select(logits, initial_logits)``, when given, replaces the overall validation EER as the quantity
    to minimise (early stopping and the epoch kept); ``initial_logits`` are the starting model's.
    ``describe(logits)``, when given, adds its fields to each epoch's record (e.g. per-part EERs).
    ``tiebreak(logits)``, when given, decides between epochs whose keys are equal (within 1e-4): the lower wins
    (without it, the earlier epoch).

    The returned config carries a calibration fitted on ``val`` and a threshold for
    ``config.false_alarm_target`` on its real clips.
    """
    import torch

    from .detector import Detector
    from .features import build_frontend
    from .model import build_model

    labels = set(train_bank.labels.tolist())
    if replay_bank is not None:  # the replay bank may supply a class the training data lacks
        labels |= set(replay_bank.labels.tolist())
    if len(train_bank) == 0 or len(labels) < 2:
        raise DataError("training needs readable clips of both classes (real and synthetic)")
    base = base or CheckpointConfig()
    config = config or TrainConfig()
    torch.manual_seed(config.seed)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = (init_model if init_model is not None else build_model(base.model)).to(device)
    frontend = build_frontend(base.front_ends).to(device)
    start_params = [p.detach().clone() for p in model.parameters()] if config.l2sp > 0 else None
    # learning without forgetting (Li & Hoiem 2017; "Detecting fake without forgetting", Ma et al. 2021): on
    # replayed original examples the fine-tuned model's logits are pulled towards the starting model's,
    # which keeps what it did on the old data (the function, where L2-SP only keeps the weights close)
    teacher = None
    if config.distill > 0 and init_model is not None and replay_bank is not None:
        teacher = copy.deepcopy(model)
        teacher.train()  # batch statistics, as the model being trained sees them ...
        for m in teacher.modules():
            if isinstance(m, torch.nn.Dropout):
                m.eval()  # ... without dropout
        _freeze(teacher)
    if config.kd > 0:
        if kd_teacher is None:
            raise ValueError("kd > 0 needs a kd_teacher model")
        if base.model.head != "linear":
            raise ValueError("knowledge distillation needs the linear (BCE) head")
        kd_teacher = _freeze(kd_teacher.to(device).eval())
    total_steps = config.epochs * config.steps_per_epoch
    crop_n = int(round(base.window.seconds * base.sample_rate))
    stream = CropStream(train_bank, crop_n, config.augment, config.seed, replay_bank, config.replay_fraction,
                        config.pair_fraction, config.balance, fake_domains=config.adversary_fakes,
                        view_fraction=config.view_fraction)
    if config.consistency > 0 and base.model.head != "linear":
        raise ValueError("the clean/telephone consistency loss needs the linear (BCE) head")
    adversary = None
    if config.adversary > 0 and len(stream.domains) > 1:
        if not hasattr(model, "embed"):
            raise ValueError("the source adversary needs a single network (members=1)")
        adversary = SourceAdversary(base.model.embedding, len(stream.domains), config.adversary, total_steps, device)
    params = list(model.parameters()) + (list(adversary.classifier.parameters()) if adversary else [])
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=config.lr, total_steps=total_steps,
                                                pct_start=config.warmup if config.warmup is not None
                                                else 0.1 if init_model is None else 0.0)
    planned = config.epochs  # the last epoch; config.fit_budget may bring it forward
    workers = default_crop_workers(device) if config.workers is None else max(0, int(config.workers))
    batches = _batches(stream, config.batch_size, workers, config.seed)

    # an exponential moving average of the weights (buffers too) is smoother across the noisy validation
    # epochs than the raw weights and tends to sit in flatter minima, which carry better to unseen data
    ema_model = None
    if config.ema > 0:
        from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

        ema_model = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema), use_buffers=True)
    scored = ema_model.module if ema_model is not None else model  # the weights validated and returned
    eval_cfg = base.replace(calibration=Calibration(), trained=True)
    history: list[dict] = []
    best: tuple[float, dict, int] | None = None  # (key, weights, epoch)
    best_tie = 0.0  # tiebreak's value for the best epoch
    best_logits = None
    bad_epochs = 0
    t0 = time.time()

    short_logits: dict[int, np.ndarray] = {}  # epoch -> logits of the short (inconclusive) validation clips

    def evaluate_now(epoch: int) -> tuple[dict, np.ndarray]:
        scored.eval()
        det = Detector(scored, eval_cfg, device=device)
        logits, short_logits[epoch] = score_valset(det, val, short=True)
        return val_metrics(logits, val), logits

    def step_loss(feats, y, d, first: bool = True, replayed=None, target=None, soft=None, views=None):
        """(detection loss, total loss, adversary loss or None) at the current weights; ``first``: the
        step's first pass (a SAM step makes a second one at moved weights, which must not advance the
        adversary's schedule). ``target``: the starting model's logits of the ``replayed`` examples;
        ``soft``: the distillation teacher's probabilities of every example; ``views``: (clean, telephone)
        indices of the batch's view pairs."""
        adv_loss = None
        if adversary is not None:
            e = model.embed(feats)
            out = model.classify(e)
            loss = model.loss(out, y)
            adv_loss = adversary.loss(e, d.to(device), advance=first)
        else:
            out = model(feats)
            loss = model.loss(out, y)
        loss_total = loss
        if soft is not None:
            loss_total = ((1 - config.kd) * loss
                          + config.kd * torch.nn.functional.binary_cross_entropy_with_logits(out, soft))
        if adv_loss is not None:
            loss_total = loss_total + adv_loss
        if target is not None:
            loss_total = loss_total + config.distill * torch.nn.functional.mse_loss(out[replayed], target)
        if views is not None:  # the telephone view learns from the clean one, not the other way round
            clean, tel = views
            if first:  # how far apart the two views' logits are, for the epoch's record
                view_gaps.append((out[tel] - out[clean]).abs().mean().item())
            if config.consistency > 0:
                loss_total = loss_total + config.consistency * view_consistency_loss(out, clean, tel)
        if start_params is not None:
            loss_total = loss_total + config.l2sp * sum(((p - p0) ** 2).sum()
                                                        for p, p0 in zip(model.parameters(), start_params))
        return loss, loss_total, adv_loss

    view_gaps: list[float] = []
    gen = torch.Generator(device="cpu").manual_seed(config.seed)
    mix_rng = np.random.default_rng(config.seed + 1)
    initial_logits = None
    if init_model is not None:
        m0, initial_logits = evaluate_now(0)
        history.append({"epoch": 0, **m0, **(describe(initial_logits) if describe else {})})
        # the starting weights are a candidate too: an epoch must beat them to replace them
        key0 = select(initial_logits, initial_logits) if select is not None else m0.get("eer_all", 1.0)
        best = (key0, copy.deepcopy(scored.state_dict()), 0)
        best_tie = tiebreak(initial_logits) if tiebreak is not None else 0.0
        best_logits = initial_logits
        if progress:
            progress(history[-1])
    for epoch in range(1, config.epochs + 1):
        if epoch > planned:
            break
        epoch_start = time.time()
        model.train()
        losses, adv_losses = [], []  # detection loss; the source adversary's classification loss
        view_gaps.clear()  # mean |telephone - clean| logit of the view pairs, per step (with view_fraction)
        for _ in range(config.steps_per_epoch):
            x, y, d, replayed, v = next(batches)
            x, y = x.to(device), y.to(device)
            views = None
            if config.view_fraction > 0:  # a view pair is a clean view followed by its telephone view
                clean = torch.nonzero((v[:-1] == 1) & (v[1:] == 2)).flatten()
                views = (clean.to(device), (clean + 1).to(device)) if len(clean) else None
            feats = frontend(x)
            if config.freq_mask > 0:
                feats = mask_bands(feats, config.freq_mask, gen)
            if config.mixup > 0:
                feats, y, d = mix_batch(feats, y.float(), d, config.mixup, mix_rng)
            target = None
            if teacher is not None and bool(replayed.any()):
                replayed = replayed.to(device)
                with torch.no_grad():
                    target = teacher(feats)[replayed]
            soft = None
            if config.kd > 0:
                with torch.no_grad():
                    soft = torch.sigmoid(kd_teacher(feats).float())
            opt.zero_grad(set_to_none=True)
            loss, loss_total, adv_loss = step_loss(feats, y, d, replayed=replayed, target=target, soft=soft,
                                                   views=views)
            loss_total.backward()
            if config.sam > 0:
                sam_step(model, params, config.sam,
                         lambda: step_loss(feats, y, d, first=False, replayed=replayed, target=target,
                                           soft=soft, views=views)[1])
            if adv_loss is not None:
                adv_losses.append(adv_loss.item())
            opt.step()
            sched.step()
            if ema_model is not None:
                ema_model.update_parameters(model)
            losses.append(loss.item())
        m, logits = evaluate_now(epoch)
        rec = {"epoch": epoch, "loss": float(np.mean(losses)),
               **({"adversary_loss": float(np.mean(adv_losses))} if adv_losses else {}),
               **({"view_gap": float(np.mean(view_gaps))} if view_gaps else {}),
               **m, **(describe(logits) if describe else {}), "seconds": round(time.time() - t0, 1)}
        elapsed, took = time.time() - t0, time.time() - epoch_start
        if config.fit_budget and config.max_seconds:
            last = last_epoch_in_budget(planned, epoch, config.max_seconds, elapsed, took)
            if epoch < last < planned:  # the rest of the schedule would be cut off: anneal over what fits
                sched = anneal_over(opt, (last - epoch) * config.steps_per_epoch)
                planned = rec["planned_epochs"] = last
        history.append(rec)
        if progress:
            progress(rec)
        key = select(logits, initial_logits) if select is not None else m.get("eer_all", 1.0)
        tie = tiebreak(logits) if tiebreak is not None else 0.0
        if best is None or key < best[0] - 1e-4 or (key <= best[0] + 1e-4 and tie < best_tie):
            best, best_tie = (key, copy.deepcopy(scored.state_dict()), epoch), tie
            best_logits = logits
            bad_epochs = 0
        else:
            bad_epochs += 1
        if bad_epochs >= config.patience:
            log.info("early stop after epoch %d", epoch)
            break
        # no epoch starts that would end past the budget, judged by the one just run
        if config.max_seconds and elapsed + took > config.max_seconds:
            log.info("time budget reached after epoch %d", epoch)
            break
    assert best is not None
    model.load_state_dict(best[1])
    model.eval()
    out_cfg = fitted_config(base, best_logits, val, config.false_alarm_target, short_logits=short_logits[best[2]])
    return TrainResult(model.cpu(), out_cfg, history, best_logits, initial_logits, best_epoch=best[2])


def fitted_config(base: CheckpointConfig, logits: np.ndarray, val: ValSet,
                  false_alarm: float = TrainConfig.false_alarm_target, *,
                  short_logits: np.ndarray | None = None) -> CheckpointConfig:
    """``base`` with the calibration, threshold and length penalty fitted on validation call logits
    (computed without calibration and without length penalty), and the short-clip calibration on
    ``short_logits`` (see :func:`score_valset`) when they hold enough clips of both classes. Fitted on one
    telephone copy per clip (``ValSet.primary``) whatever ``val`` holds, so the threshold's false-alarm rate is
    over clean and telephone clips alike, not mostly telephone ones."""
    keep = val.primary
    if not keep.all():
        logits, val = logits[keep], val.subset(keep)
        short_logits = short_logits[keep] if short_logits is not None else None
    cal, thr, rule = fit_calibration(logits, val, false_alarm)
    aggregation = replace(base.aggregation, length_penalty=fit_length_penalty(logits, val))
    short_cal = fit_short_calibration(short_logits, val) if short_logits is not None else None
    return base.replace(calibration=cal, threshold=thr, threshold_rule=rule, trained=True, aggregation=aggregation,
                        short_calibration=short_cal or base.short_calibration)


def fit_calibration(logits: np.ndarray, val: ValSet, false_alarm: float) -> tuple[Calibration, float, str]:
    """Platt calibration on validation call logits and a threshold at ``false_alarm`` on real clips."""
    m = np.isfinite(logits)
    y = val.labels[m]
    cal = Calibration.fit(logits[m], y)
    p_real = cal.probability(logits[m][y == 0])
    thr = float(min(0.99, max(0.5, threshold_for_false_alarm(p_real, false_alarm))))
    rule = (f"{false_alarm:.0%} of held-out real clips (clean and telephone) flagged, and at least 0.5; "
            f"fitted on {int((y == 0).sum())} real / {int((y == 1).sum())} synthetic validation scores")
    return cal, thr, rule


#: fewest short validation clips of each class a short-clip calibration is fitted on
MIN_SHORT_PER_CLASS = 10


def fit_short_calibration(short_logits: np.ndarray, val: ValSet) -> Calibration | None:
    """Platt calibration of the short clips' call logits (classes weighted equally, so a clip's length says
    nothing about its class); None when there are fewer than ``MIN_SHORT_PER_CLASS`` of either class."""
    m = np.isfinite(short_logits)
    y = val.labels[m]
    if min(int((y == 0).sum()), int((y == 1).sum())) < MIN_SHORT_PER_CLASS:
        return None
    return Calibration.fit(short_logits[m], y)


def fit_length_penalty(logits: np.ndarray, val: ValSet) -> float:
    """Spread (standard deviation) of the call logits of real validation clips: the scale by which the
    maximum over a long call's windows grows on real speech (see ``AggregationConfig.length_penalty``)."""
    m = np.isfinite(logits) & (val.labels == 0)
    return round(float(np.std(logits[m])), 4) if m.sum() >= 2 else 0.0


# ---------------------------------------------------------------------------- fine-tuning
REPLAY_FILES = 400  # original training files decoded for replay (a sample: decoding all costs minutes)
#: original validation files re-scored each epoch (a sample when there are more). 500 holds all of the shipped
#: checkpoint's held-out files: a 200-file sample's EER change strayed 1.4-1.9 points (standard deviation) from
#: the whole set's in session 32, as much as the loss it is there to catch
ORIGINAL_VAL_FILES = 500
#: EER the original validation data may lose in an epoch that fine-tuning keeps: half the issue's 2 points, since
#: the measure itself is noisy and the best of several epochs flatters it (session 32: an epoch that lost 1.7
#: points there lost 3.0 on the same files re-scored through other telephone codecs)
FORGET_TOLERANCE = 0.01
#: the EERs of the original validation data whose largest rise is what a fine-tune lost (see :func:`eer_lost`)
FORGET_MEASURES = ("eer_all", "eer_clean", "eer_telephone")
#: telephone copies of each validation clip a fine-tune scores, each through another codec. With one per file, a
#: fine-tuned model measured +2.4 points lost on the held-out files unrelated to its new data; with every file
#: through all four codecs, +0.4 pooled, -1.0 clean and -0.7 telephone (session 34): which file drew which codec
#: is noise the check against forgetting must not carry
FINETUNE_TELEPHONE_COPIES = len(TELEPHONE_VAL_CODECS)
#: what `finetune` (and `voiceguard finetune`, whose flag defaults must match: tests/test_train.py) runs by default.
#: No early stop within the 8 epochs: the learning rate starts at its peak and anneals, so the first epochs forget
#: the most and the last ones recover (with patience 3, one check stopped at epoch 3 and kept nothing). When fewer
#: than 8 fit the budget (the shipped seven networks: 4 or 5 on 2 CPU cores), the annealing is fitted to them
FINETUNE_CONFIG = TrainConfig(epochs=8, steps_per_epoch=40, lr=1e-3, patience=8, l2sp=7e-4, distill=0.35,
                              replay_fraction=0.5, max_seconds=8.5 * 60, fit_budget=True)
#: TrainConfig fields a fine-tune records in the checkpoint (training["finetunes"])
FINETUNE_SETTINGS = ("epochs", "steps_per_epoch", "lr", "warmup", "l2sp", "distill", "replay_fraction",
                     "adversary", "interpolate", "ema", "fit_budget", "seed")


def eer_lost(before: dict, after: dict) -> float | None:
    """EER lost from ``before`` to ``after`` (:func:`val_metrics` results): the largest rise among the pooled,
    clean and telephone EERs (``FORGET_MEASURES``; negative when all fell), None when they share none of them.
    The pooled EER alone can rise while both conditions gain, when the two conditions' scores shift apart, and
    can hide a loss on one condition behind a gain on the other."""
    lost = [after[k] - before[k] for k in FORGET_MEASURES if k in before and k in after]
    return max(lost) if lost else None


def selection_key(new_eer: float, lost: float | None) -> float:
    """How a fine-tune ranks its epochs (lower is better): by the EER on the new data's validation part, among
    those whose original validation data lost (``lost``, see :func:`eer_lost`; None: not measured) at most
    ``FORGET_TOLERANCE`` of EER since the start; one that lost more ranks below the starting weights, which lost
    nothing (and below every epoch that qualifies)."""
    if lost is not None and lost > FORGET_TOLERANCE + 1e-9:
        return 1.0 + new_eer
    return new_eer


def mix_weights(start: dict, end: dict, share: float) -> dict:
    """State dict ``share`` of the way from ``start`` to ``end`` (floating tensors, buffers included;
    counters are taken from ``end``): weight-space ensembling of a fine-tuned model with its starting point
    (WiSE-FT, Wortsman et al. 2022), which keeps much of what fine-tuning gained on the new data while
    giving back much of what it cost elsewhere."""
    return {k: (start[k] + share * (v - start[k])) if v.is_floating_point() else v for k, v in end.items()}


def _interpolated(result: "TrainResult", start_state: dict, val: "ValSet", cfg: TrainConfig,
                  base: CheckpointConfig, select: Callable, log_fn: Callable[[str], None]):
    """(result, share): the kept epoch's weights mixed with the starting ones at each share in
    ``cfg.interpolate``, scored on ``val``; the best by ``select`` among those, the kept epoch itself (share 1)
    and the starting weights (share 0), with the calibration re-fitted for it."""
    import torch

    from .calibration import Calibration
    from .detector import Detector

    device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = result.model
    end_state = copy.deepcopy(model.state_dict())
    eval_cfg = base.replace(calibration=Calibration(), trained=True)
    initial = result.initial_logits

    def load(share: float) -> None:
        model.load_state_dict(end_state if share == 1.0 else mix_weights(start_state, end_state, share))
        model.eval()

    def score(share: float) -> tuple[np.ndarray, np.ndarray]:
        load(share)
        model.to(device)
        out = score_valset(Detector(model, eval_cfg, device=device), val, short=True)
        model.cpu()
        return out

    scored = {1.0: (result.val_logits, None), 0.0: (initial, None)}
    for share in sorted({float(s) for s in cfg.interpolate} - {0.0, 1.0}):
        scored[share] = score(share)
    # the rule's score, then (ties) the EER over all the validation data: of mixes alike on the new data, the
    # one that kept more of what the model knew
    keys = {s: (round(select(lg, initial), 4), val_metrics(lg, val).get("eer_all", 1.0))
            for s, (lg, _) in scored.items()}
    for s in sorted(keys):
        log_fn(f"weights {s:.0%} fine-tuned, {1 - s:.0%} starting: selection score {keys[s][0]:.4f}, "
               f"EER on all the validation data {keys[s][1]:.1%}")
    share = min(sorted(keys, reverse=True), key=keys.get)
    load(share)
    if share == 1.0:
        return result, 1.0
    logits, short = scored[share]
    if short is None:  # the starting weights: their short clips' logits are scored again
        logits, short = score(share)
    log_fn(f"kept {share:.0%} of the fine-tuned weights, {1 - share:.0%} of the starting ones")
    out_cfg = fitted_config(base, logits, val, cfg.false_alarm_target, short_logits=short)
    return replace(result, model=model, config=out_cfg, val_logits=logits), share


@dataclass
class FinetuneReport:
    before: dict  # EERs of the starting model: {"new": {...}, "original": {...}}
    after: dict
    history: list[dict]
    replay: str  # what was replayed, in words
    new_train_files: int
    new_val_files: int
    minutes: float
    kept_epoch: int = 0  # 0: no epoch beat the starting weights, which were kept
    settings: dict = field(default_factory=dict)  # the fine-tune's settings (epochs, lr, regularisers, seed)
    mix: float = 1.0  # share of the kept epoch's weights in the result, the rest the starting weights'
    #: per part ("new", "original"): the pooled EER's change with its bootstrap interval (:func:`val_change`)
    changes: dict = field(default_factory=dict)

    def forgetting(self) -> float:
        """EER the original validation data lost (the largest rise of its pooled, clean and telephone EERs, see
        :func:`eer_lost`; 0 when none rose or it was not scored). Measured on at most ``ORIGINAL_VAL_FILES`` files,
        so a point or so is noise (the whole held-out set of the shipped checkpoint: a bootstrap standard deviation
        of 1.3-1.9 points in session 32)."""
        lost = eer_lost(self.before.get("original", {}), self.after.get("original", {}))
        return 0.0 if lost is None else max(0.0, lost)


def replay_sources(config: CheckpointConfig, root=None) -> tuple[list[Item], list[Item]]:
    """(train, validation) items of the data a checkpoint was trained on, when still on this machine.

    Uses the manifests and held-out sources recorded in the checkpoint's training summary.
    """
    from pathlib import Path

    from .data import read_manifest

    rec = (config.training or {}).get("replay") or {}
    base = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    items: list[Item] = []
    for m in rec.get("manifests", []):
        p = Path(m) if Path(m).is_absolute() else base / m
        if p.is_file():
            items += read_manifest(p)
    held_src = set(rec.get("validation_sources", []))
    held_gen = tuple(rec.get("validation_generators", []))
    is_val = [it.source in held_src or (held_gen and it.generator.startswith(held_gen)) for it in items]
    return ([it for it, v in zip(items, is_val) if not v], [it for it, v in zip(items, is_val) if v])


def _sample(items: list[Item], n: int, seed: int) -> list[Item]:
    if len(items) <= n:
        return list(items)
    rng = np.random.default_rng(seed)
    return [items[i] for i in sorted(rng.choice(len(items), n, replace=False))]


def copies_of(new_items: Sequence[Item], items: Sequence[Item]) -> set[str]:
    """Paths of ``items`` whose bytes are those of a file of ``new_items`` under another path (a clip copied
    elsewhere). Only files of a size some new file has are read."""
    import hashlib
    import os

    def size(path: str) -> int:
        try:
            return os.path.getsize(path)
        except OSError:
            return -1

    def digest(path: str) -> str | None:
        try:
            return hashlib.sha1(Path(path).read_bytes()).hexdigest()
        except OSError:
            return None

    new_paths = {it.path for it in new_items}
    by_size: dict[int, list[str]] = {}
    for p in new_paths:
        by_size.setdefault(size(p), []).append(p)
    by_size.pop(-1, None)
    candidates = {p: s for p in {it.path for it in items} - new_paths if (s := size(p)) in by_size}
    new_digests = {digest(p) for s in set(candidates.values()) for p in by_size[s]} - {None}
    return {p for p in candidates if digest(p) in new_digests}


def finetune(
    new_items: Sequence[Item],
    model,
    base: CheckpointConfig,
    *,
    replay_items: Sequence[Item] | None = None,
    original_val_items: Sequence[Item] | None = None,
    config: TrainConfig | None = None,
    val_fraction: float = 0.25,
    log_fn: Callable[[str], None] = log.info,
    progress: Callable[[dict], None] | None = None,
) -> tuple[TrainResult, FinetuneReport]:
    """Adapt a trained model to new real/synthetic samples without wrecking what it knew.

    The new items are split by speaker/source into train and validation parts (by file for a class whose
    speakers are unknown). New data of one class only (just the fakes of a new generator) is completed with
    the other class from the original data: replayed for training, and files of the original validation
    data joining the new validation part. Each batch mixes new clips with replayed original training clips
    (when available); the loss keeps the replayed clips' logits near the starting model's
    (``TrainConfig.distill``) and pulls the weights towards the starting ones (L2-SP). The epoch kept (and
    early stopping) follows the new validation part's EER, as long as the original validation data loses at
    most ``FORGET_TOLERANCE`` (of epochs alike on the new data, the one that lost less there); files of the
    new data's sources are left out of that check, and new files that are copies of original ones tell their
    sources when the new data does not (plain folders). With
    ``TrainConfig.interpolate`` the fine-tune instead runs to its last epoch, whose weights are mixed with the
    starting ones at those shares (weight-space ensembling, see :func:`mix_weights`), and the best mix by that
    rule is kept (the last epoch or the start included). The calibration is re-fitted on both parts together.
    EERs before and after are reported on both.
    """
    t0 = time.time()
    config = config or replace(FINETUNE_CONFIG)
    new_items = list(new_items)
    # the new data may overlap what the model was trained or validated on, under the same paths or copied
    original_val_items, replay_items = list(original_val_items or []), list(replay_items or [])
    copies = copies_of(new_items, original_val_items + replay_items)
    if copies:
        log_fn(f"note: {len(copies)} files of the original data are copies of new files and are left out of it")
    new_paths = {it.path for it in new_items} | copies
    # copies tell where the new data comes from when it does not say (plain folders): their originals' sources
    copied_sources = {it.source for it in original_val_items + replay_items if it.path in copies and it.source}
    original_val_items = [it for it in original_val_items if it.path not in new_paths]
    replay_items = [it for it in replay_items if it.path not in new_paths]
    new_train, new_val, notes = split_new_data(new_items, val_fraction, seed=config.seed)
    for note in notes:
        log_fn(f"note: {note}")
    # new data of one class only (e.g. just the fakes of a new generator): the other class comes from the
    # original data, replayed for training and taken from its validation part for the new validation part
    missing = sorted({0, 1} - {it.label for it in new_items})
    for label in missing:
        kind = ("real", "synthetic")[label]
        pool = [it for it in replay_items if it.label == label]
        borrowed = [it for it in original_val_items if it.label == label]
        where = "original validation data"
        if not borrowed and len(pool) >= 4:  # no validation data on record: hold some replay files out
            borrowed, where = pool[::4], "original training data (no longer replayed)"
            held = {it.path for it in borrowed}
            replay_items = [it for it in replay_items if it.path not in held]
        if not borrowed or not any(it.label == label for it in replay_items):
            raise DataError(f"the new data holds no {kind} recordings and the original training data is not on "
                            f"this machine to supply them: add --{('real', 'fake')[label]} DIR (or --replay CSV)")
        n = min(len(borrowed), max(20, 2 * len(new_val)))
        new_val = new_val + _sample(borrowed, n, config.seed)
        log_fn(f"note: the new data holds no {kind} recordings: {kind} training examples come from the original "
               f"training data, and {n} {kind} files of the {where} join the new validation part")
    if not new_val or len({it.label for it in new_val}) < 2 or not new_train:
        raise DataError("the new data is too small to hold out a validation part with both real and synthetic "
                        "speech and still train on the rest; add more files")
    log_fn(f"new data: {len(new_train)} files to train on, {len(new_val)} held out")
    new_bank = ClipBank(new_train)
    new_val_set = ValSet.build(ClipBank(new_val), copies=FINETUNE_TELEPHONE_COPIES)
    replay_bank = None
    replay_desc = "none (regularised towards the starting weights only)"
    if replay_items:
        replay_bank = ClipBank(_sample(list(replay_items), REPLAY_FILES, config.seed))
        replay_desc = f"{len(replay_bank)} original training files"
    # the guard against forgetting measures what the model knew elsewhere: files of the new data's own sources
    # (and copies made from their clips) are not elsewhere, and there a fine-tune's gain would hide its losses
    new_sources = {it.source for it in new_items if it.source} | copied_sources
    guard_items = [it for it in original_val_items if not it.comes_from(new_sources)]
    if len(guard_items) < len(original_val_items):
        hit = sorted(s for s in new_sources if any(it.comes_from({s}) for it in original_val_items))
        log_fn(f"note: {len(original_val_items) - len(guard_items)} files of the original validation data come from "
               f"the new data's sources ({', '.join(hit)}) and are left out of the check against forgetting")
    orig_val_set = None
    if guard_items:
        orig_val_set = ValSet.build(ClipBank(_sample(guard_items, ORIGINAL_VAL_FILES, config.seed)),
                                    copies=FINETUNE_TELEPHONE_COPIES)
    log_fn(f"replay: {replay_desc}; decoded in {time.time() - t0:.0f} s")

    combined = ValSet.join(new_val_set, orig_val_set)
    cfg = config if replay_bank is not None else replace(config, replay_fraction=0.0)
    n_new = len(new_val_set.items)

    def per_part(logits: np.ndarray) -> dict:
        """Before/after per part, from the logits train() computes on the joined validation set."""
        parts = {"new": val_metrics(logits[:n_new], new_val_set), "original": {}}
        if orig_val_set is not None:
            parts["original"] = val_metrics(logits[n_new:], orig_val_set)
        return parts

    def select(logits: np.ndarray, initial: np.ndarray | None) -> float:
        parts = per_part(logits)
        lost = eer_lost(per_part(initial)["original"], parts["original"]) if initial is not None else None
        return selection_key(parts["new"].get("eer_all", 1.0), lost)

    def original_eer(logits: np.ndarray) -> float:  # ties on the new data: the epoch that kept more
        return per_part(logits)["original"].get("eer_all", 1.0)

    def describe(logits: np.ndarray) -> dict:  # each epoch's record: the new part's EER, the original's measures
        parts = per_part(logits)
        return {f"{part}_{k}": parts[part][k] for part, keys in (("new", ("eer_all",)), ("original", FORGET_MEASURES))
                for k in keys if k in parts[part]}

    start_state = copy.deepcopy(model.state_dict()) if cfg.interpolate else None  # train() updates it in place
    calls = itertools.count()

    def last_epoch(logits: np.ndarray, initial: np.ndarray | None) -> float:
        return -float(next(calls))  # every epoch beats the one before: train() returns the last one

    # with interpolation the fine-tune runs to its end (the annealed last epoch, as in WiSE-FT) and the rule
    # chooses among its mixes with the starting weights instead of among epochs
    result = train(new_bank, combined, config=cfg, base=base, init_model=model, replay_bank=replay_bank,
                   progress=progress, select=last_epoch if cfg.interpolate else select, describe=describe,
                   tiebreak=None if cfg.interpolate else original_eer)
    mix = 1.0
    if cfg.interpolate and result.best_epoch > 0:
        result, mix = _interpolated(result, start_state, combined, cfg, base, select, log_fn)

    if result.best_epoch == 0:
        tol = FORGET_TOLERANCE * 100
        log_fn("note: no epoch did better on the new data than the starting model without losing more than "
               f"{tol:g} point{'' if tol == 1 else 's'} of EER on the original validation data, so its weights are "
               "kept (calibration re-fitted); try more or other new data")
    else:
        log_fn(f"kept epoch {result.best_epoch}")
    before, after = per_part(result.initial_logits), per_part(result.val_logits)
    log_fn(f"before: new data {before['new']}; original validation {before['original']}")
    log_fn(f"after:  new data {after['new']}; original validation {after['original']}")
    halves = (("new", slice(0, n_new), new_val_set), ("original", slice(n_new, None), orig_val_set))
    changes = {part: val_change(result.initial_logits[sl], result.val_logits[sl], vs)
               for part, sl, vs in halves if vs is not None}
    report = FinetuneReport(before, after, result.history, replay_desc, len(new_bank), len(new_val),
                            round((time.time() - t0) / 60, 2), result.best_epoch,
                            {k: getattr(cfg, k) for k in FINETUNE_SETTINGS}, mix,
                            {k: v for k, v in changes.items() if v is not None})
    summary = dict(base.training or {})
    summary.setdefault("finetunes", [])
    summary["finetunes"] = summary["finetunes"] + [{k: v for k, v in asdict(report).items() if k != "history"}]
    result.config = result.config.replace(training=summary)
    return result, report
