"""Data readers: every way a user can point VoiceGuard at labelled recordings becomes a list of :class:`Item`.

Readers never decode audio; missing files are reported (``logging``) and skipped, never fatal.
Labels: 1 = synthetic (spoof), 0 = human (bona fide).
"""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .errors import DataError

log = logging.getLogger(__name__)

BONAFIDE_WORDS = frozenset({"bonafide", "bona-fide", "bona fide", "real", "human", "genuine", "0"})
SPOOF_WORDS = frozenset({"spoof", "fake", "synthetic", "deepfake", "1"})


@dataclass
class Item:
    """One labelled recording."""

    path: str  # absolute or as given
    label: int  # 1 = synthetic, 0 = human
    speaker: str = ""
    source: str = ""
    generator: str = ""  # for spoofs: the TTS / VC / vocoder system
    lang: str = ""
    extra: dict = field(default_factory=dict)  # any other manifest columns

    def group(self, key: str) -> str:
        """Value of a grouping column (``generator``, ``source``, ``lang``, ``speaker`` or an extra column)."""
        if key in ("speaker", "source", "generator", "lang"):
            value = getattr(self, key)
        else:
            value = self.extra.get(key, "")
        if key == "generator" and not value:
            return "bonafide" if self.label == 0 else "unknown"
        return value or "unknown"


def parse_label(value: str) -> int:
    """1 for synthetic, 0 for human; raises DataError for anything else."""
    v = str(value).strip().lower()
    if v in SPOOF_WORDS:
        return 1
    if v in BONAFIDE_WORDS:
        return 0
    raise DataError(f"unknown label {value!r} (use bonafide/real/human or spoof/fake/synthetic)")


def keep_existing(items: Iterable[Item]) -> list[Item]:
    """Drop items whose file is missing, logging each one."""
    out = []
    for it in items:
        if os.path.isfile(it.path):
            out.append(it)
        else:
            log.warning("skipping %s: no such file", it.path)
    return out


def read_manifest(path: str | os.PathLike, *, root: str | os.PathLike | None = None) -> list[Item]:
    """Read a CSV with at least ``path,label`` (more columns kept: speaker, source, generator, lang, ...).

    Relative paths are taken relative to ``root`` (default: the manifest's folder).
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such manifest")
    base = Path(root) if root is not None else p.parent
    items = []
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise DataError(f"{p}: a manifest needs the columns path,label (found {reader.fieldnames})")
        for lineno, row in enumerate(reader, start=2):
            try:
                label = parse_label(row["label"])
            except DataError as err:
                raise DataError(f"{p}:{lineno}: {err}") from None
            fp = row["path"]
            full = fp if os.path.isabs(fp) else str(base / fp)
            known = {"path", "label", "speaker", "source", "generator", "lang"}
            items.append(Item(full, label, speaker=row.get("speaker") or "", source=row.get("source") or "",
                              generator=row.get("generator") or "", lang=row.get("lang") or "",
                              extra={k: v for k, v in row.items() if k not in known and k is not None}))
    return keep_existing(items)


def read_folders(real: str | os.PathLike | None, fake: str | os.PathLike | None) -> list[Item]:
    """All audio files below ``real`` (label 0) and ``fake`` (label 1), recursively, in sorted order.

    The speaker of a file is its parent folder's name when the folder holds sub-folders, else its source
    folder's name; the source is the top folder given.
    """
    from .audio import audio_extensions

    exts = audio_extensions()
    items: list[Item] = []
    for folder, label in ((real, 0), (fake, 1)):
        if folder is None:
            continue
        d = Path(folder)
        if not d.is_dir():
            raise DataError(f"{d}: no such folder")
        files = sorted(f for f in d.rglob("*") if f.is_file() and f.suffix.lower() in exts)
        if not files:
            raise DataError(f"{d}: no audio files found (looked for {', '.join(sorted(exts))})")
        for f in files:
            rel = f.relative_to(d)
            speaker = rel.parts[0] if len(rel.parts) > 1 else d.name
            items.append(Item(str(f), label, speaker=speaker, source=d.name,
                              generator="" if label == 0 else d.name))
    return items
