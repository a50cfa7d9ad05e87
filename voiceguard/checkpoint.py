"""Checkpoints: ``NAME.safetensors`` (weights) + ``NAME.json`` (everything else), never a pickle.

The JSON holds the front-end, model, window, VAD, aggregation and calibration parameters, the decision
threshold and a training summary, so a checkpoint always runs with the settings it was trained with.
Loading reads tensors with ``safetensors`` and plain JSON: a checkpoint from a stranger cannot run code.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .audio import SAMPLE_RATE
from .calibration import Calibration
from .errors import CheckpointError
from .features import FeatureConfig
from .model import ModelConfig
from .vad import VadConfig
from .windows import AggregationConfig

FORMAT_VERSION = 1  # bump when the JSON layout changes incompatibly
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"
DEFAULT_NAME = "voiceguard"
ENV_VAR = "VOICEGUARD_CHECKPOINT"  # overrides the default checkpoint path


@dataclass(frozen=True)
class WindowConfig:
    seconds: float = 4.0  # window length
    hop_seconds: float = 2.0  # step between windows
    min_seconds: float = 1.0  # shortest audio scored at all (a call shorter than this is inconclusive)
    min_speech_fraction: float = 0.3  # windows with less speech than this are not scored


@dataclass(frozen=True)
class CheckpointConfig:
    name: str = DEFAULT_NAME
    sample_rate: int = SAMPLE_RATE
    features: FeatureConfig = field(default_factory=FeatureConfig)
    #: front-ends 1, 2, ... of an ensemble whose networks read different features (``model.inputs`` says
    #: which network reads which; front-end 0 is ``features``). Empty: every network reads ``features``.
    extra_features: tuple[FeatureConfig, ...] = ()
    model: ModelConfig = field(default_factory=ModelConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    aggregation: AggregationConfig = field(default_factory=AggregationConfig)
    calibration: Calibration = field(default_factory=Calibration)
    #: calibration of the call logits of recordings with under ``min_speech_seconds`` of speech: their verdict is
    #: "inconclusive", but they still get this low-confidence probability (fitted on such validation clips
    #: alone, whose scores sit elsewhere and are less reliable). None: no probability for them.
    short_calibration: Calibration | None = None
    threshold: float = 0.5  # calibrated probability at and above which the verdict is "synthetic"
    threshold_rule: str = "default 0.5 (not fitted)"
    min_speech_seconds: float = 2.0  # less speech than this gives the verdict "inconclusive"
    trained: bool = False  # False for random-weight models (tests, smoke runs)
    training: dict = field(default_factory=dict)  # summary: data, epochs, metrics, ...
    format_version: int = FORMAT_VERSION
    voiceguard_version: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "extra_features", tuple(self.extra_features))
        if self.extra_features and max(self.model.inputs or (0,)) != len(self.extra_features):
            raise ValueError(f"{len(self.front_ends)} front-ends need a model whose members read them all "
                             f"(model inputs {list(self.model.inputs)})")
        if not self.extra_features and any(self.model.inputs):
            raise ValueError(f"model inputs {list(self.model.inputs)} name front-ends this config lacks")

    @property
    def front_ends(self) -> tuple[FeatureConfig, ...]:
        """Every front-end of the checkpoint, in the order ``model.inputs`` counts them."""
        return (self.features, *self.extra_features)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["extra_features"] = [asdict(f) for f in self.extra_features]
        d["model"] = self.model.to_dict()
        if not d["voiceguard_version"]:
            from . import __version__

            d["voiceguard_version"] = __version__
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CheckpointConfig":
        from . import __version__

        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint format {version} (written by voiceguard {d.get('voiceguard_version', '?')}) "
                f"is not supported by voiceguard {__version__}, which reads format {FORMAT_VERSION}",
                kind="checkpoint-version")
        try:
            return cls(
                name=str(d["name"]), sample_rate=int(d["sample_rate"]),
                features=FeatureConfig(**d["features"]),
                extra_features=tuple(FeatureConfig(**f) for f in d.get("extra_features") or ()),
                model=ModelConfig(**d["model"]),
                window=WindowConfig(**d["window"]), vad=VadConfig(**d["vad"]),
                aggregation=AggregationConfig(**d["aggregation"]), calibration=Calibration(**d["calibration"]),
                short_calibration=Calibration(**d["short_calibration"]) if d.get("short_calibration") else None,
                threshold=float(d["threshold"]), threshold_rule=str(d.get("threshold_rule", "")),
                min_speech_seconds=float(d["min_speech_seconds"]), trained=bool(d["trained"]),
                training=dict(d.get("training") or {}), format_version=int(version),
                voiceguard_version=str(d.get("voiceguard_version", "")),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise CheckpointError(f"checkpoint config is malformed: {err}") from None

    def replace(self, **changes: Any) -> "CheckpointConfig":
        return replace(self, **changes)


def resolve(path: str | os.PathLike | None = None) -> tuple[Path, Path]:
    """(weights, config) paths for a checkpoint given as NAME, NAME.json, NAME.safetensors or None."""
    if path is None:
        path = os.environ.get(ENV_VAR) or DEFAULT_DIR / f"{DEFAULT_NAME}.safetensors"
    p = Path(path)
    if p.is_dir():
        p = p / f"{DEFAULT_NAME}.safetensors"
    stem = p.with_suffix("") if p.suffix in (".json", ".safetensors") else p
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save(path: str | os.PathLike, model, config: CheckpointConfig) -> Path:
    """Write ``model``'s weights and ``config``; returns the weights path."""
    from safetensors.torch import save_file

    weights, cfg = resolve(path)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp_w, tmp_c = weights.with_suffix(".safetensors.tmp"), cfg.with_suffix(".json.tmp")
    save_file(state, str(tmp_w), metadata={"format": "pt", "voiceguard_format": str(FORMAT_VERSION)})
    tmp_c.write_text(json.dumps(config.to_dict(), indent=2, sort_keys=False) + "\n")
    os.replace(tmp_w, weights)
    os.replace(tmp_c, cfg)
    return weights


def load(path: str | os.PathLike | None = None, *, device: str = "cpu"):
    """Read a checkpoint; returns ``(model in eval mode, CheckpointConfig)``.

    Raises
    ------
    CheckpointError
        missing files, malformed JSON, incompatible format, or weights that do not fit the config.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .model import build_model

    weights, cfg = resolve(path)
    if not weights.exists() or not cfg.exists():
        missing = weights if not weights.exists() else cfg
        raise CheckpointError(
            f"no checkpoint at {missing} (a checkpoint is NAME.safetensors + NAME.json; train the default "
            "with `python scripts/train_default.py` or pass --checkpoint)", kind="missing-checkpoint")
    try:
        config = CheckpointConfig.from_dict(json.loads(cfg.read_text()))
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{cfg}: not valid JSON ({err})") from None
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights}: not a readable safetensors file ({err})") from None
    model = build_model(config.model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"{weights}: weights do not match the config: {str(err).splitlines()[0]}") from None
    return model.to(device).eval(), config


def members(model, config: CheckpointConfig) -> list[tuple[Any, CheckpointConfig]]:
    """The single networks of a combined checkpoint, each as ``(network, its own CheckpointConfig)`` reading its
    own front-end, so that they can be scored alone or combined anew with others (scripts/combine_checkpoints.py).
    A single network comes back as it is. A member's calibration and threshold are not its own (only the
    ensemble's were fitted): they are reset to the defaults, so only its logits mean anything. Its training record
    is the ensemble's, with the member's own entry (command, best epoch, data) laid over it."""
    if config.model.members == 1:
        return [(model, config)]
    records = config.training.get("members") or []
    shared = {k: v for k, v in config.training.items() if k not in ("members", "validation_per_source")}
    out = []
    for i, net in enumerate(model.members):
        record = records[i] if len(records) == config.model.members else {}
        training = {**shared, **{k: v for k, v in record.items() if k != "data"},
                    "data": {**shared.get("data", {}), **record.get("data", {})}}
        front = config.front_ends[config.model.inputs[i] if config.model.inputs else 0]
        out.append((net, config.replace(
            name=re.sub(r"-x\d+$", "", config.name), features=front, extra_features=(),
            model=replace(config.model, members=1, inputs=()), calibration=Calibration(),
            short_calibration=None, threshold=0.5, threshold_rule="member of a combined checkpoint (not fitted alone)",
            training=training)))
    return out
