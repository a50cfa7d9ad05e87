"""Data readers: every way a user can point VoiceGuard at labelled recordings becomes a list of :class:`Item`.

Sources: folder pairs (:func:`read_folders`), ``path,label`` CSV manifests (:func:`read_manifest`), ASVspoof
2019 CM protocols (:func:`read_asvspoof2019`), ASVspoof 2021 LA/DF keys (:func:`read_asvspoof2021`), ASVspoof 5
protocols (:func:`read_asvspoof5`) and In-the-Wild ``meta.csv`` (:func:`read_in_the_wild`);
:func:`read_protocol` sniffs which one a label file is, :func:`read_items` picks by the arguments given.

Readers never decode audio; missing files are reported (``logging``) and skipped, never fatal.
Labels: 1 = synthetic (spoof), 0 = human (bona fide).
"""
from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

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

    def comes_from(self, sources) -> bool:
        """Whether this recording is of one of ``sources``, or a copy-synthesis of a clip of one (its manifest's
        ``orig_source`` column, written by the local spoof makers)."""
        return self.source in sources or self.extra.get("orig_source", "") in sources


def parse_label(value: str) -> int:
    """1 for synthetic, 0 for human; raises DataError for anything else."""
    v = str(value).strip().lower()
    if v in SPOOF_WORDS:
        return 1
    if v in BONAFIDE_WORDS:
        return 0
    raise DataError(f"unknown label {value!r} (use bonafide/real/human or spoof/fake/synthetic)")


MAX_MISSING_LOGGED = 10  # missing files named one by one; the rest are counted in one line


def keep_existing(items: Iterable[Item], *, hint: str = "") -> list[Item]:
    """Drop items whose file is missing, logging the first few by name and a count of all of them."""
    out, missing = [], 0
    for it in items:
        if os.path.isfile(it.path):
            out.append(it)
            continue
        missing += 1
        if missing <= MAX_MISSING_LOGGED:
            log.warning("skipping %s: no such file", it.path)
    if missing:
        total = missing + len(out)
        if missing > MAX_MISSING_LOGGED:
            log.warning("... and %d more missing files", missing - MAX_MISSING_LOGGED)
        log.warning("skipped %d of %d listed recordings: file not found%s", missing, total,
                    f" ({hint})" if hint else "")
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


# ---------------------------------------------------------------------------- ASVspoof & In-the-Wild
#: keys of ASVspoof protocols -> our label
PROTOCOL_KEYS = {"bonafide": 0, "bona-fide": 0, "spoof": 1}
#: column names of the whitespace-separated protocol layouts (the key column is found by its values)
ASVSPOOF2019_COLUMNS = ("speaker", "file", "environment", "attack", "key")
ASVSPOOF2021_LA_COLUMNS = ("speaker", "file", "codec", "transmission", "attack", "key", "trim", "subset")
ASVSPOOF2021_DF_COLUMNS = ("speaker", "file", "codec", "corpus", "attack", "key", "trim", "subset", "vocoder")
ASVSPOOF5_COLUMNS = ("speaker", "file", "gender", "codec", "codec_q", "codec_seed", "attack_tag", "attack",
                     "key", "tmp")
PROTOCOL_FORMATS = ("manifest", "in-the-wild", "asvspoof2019", "asvspoof2021", "asvspoof5")
_KEY_SNIFF_ROWS = 20_000  # rows looked at to find the key column
_AUDIO_SUFFIXES = (".flac", ".wav")  # tried, in order, for protocol file ids without an extension


def _audio_path(audio_dir: Path, file_id: str) -> str:
    """Where the audio of a protocol's file id lies: DIR/ID.flac (or .wav, or DIR/flac/ID.flac)."""
    if Path(file_id).suffix.lower() in _AUDIO_SUFFIXES:
        candidates = [audio_dir / file_id, audio_dir / "flac" / file_id]
    else:
        candidates = [audio_dir / f"{file_id}{ext}" for ext in _AUDIO_SUFFIXES] + [
            audio_dir / "flac" / f"{file_id}.flac"]
    for c in candidates:
        if c.is_file():
            return str(c)
    return str(candidates[0])


def _protocol_rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise DataError(f"{path}: no such protocol file")
    with path.open(encoding="utf-8", errors="replace") as f:
        return [line.split() for line in f if line.strip() and not line.lstrip().startswith("#")]


def _key_column(rows: list[list[str]], prefer: int | None) -> int:
    """Index of the column that holds bonafide/spoof on (nearly) every row."""
    counts: dict[int, int] = {}
    spoofs: set[int] = set()
    for tokens in rows[:_KEY_SNIFF_ROWS]:
        for i, tok in enumerate(tokens):
            t = tok.lower()
            if t in PROTOCOL_KEYS:
                counts[i] = counts.get(i, 0) + 1
                if PROTOCOL_KEYS[t] == 1:
                    spoofs.add(i)
    if not counts:
        raise DataError("no column holds the key bonafide/spoof (a trial list without keys? use the key "
                        "file, e.g. ASVspoof 2021's keys/CM/trial_metadata.txt)")
    return max(counts, key=lambda i: (counts[i], i in spoofs, i == prefer, i))


def _read_whitespace_protocol(path: str | os.PathLike, audio_dir: str | os.PathLike | None,
                              columns: Sequence[str], source: str,
                              rows: list[list[str]] | None = None) -> list[Item]:
    """Shared reader of the ASVspoof protocol layouts: ``columns`` names the columns in order."""
    p = Path(path)
    rows = _protocol_rows(p) if rows is None else rows
    if not rows:
        raise DataError(f"{p}: empty protocol file")
    try:
        key = _key_column(rows, columns.index("key") if "key" in columns else None)
    except DataError as err:
        raise DataError(f"{p}: {err}") from None
    if key < 2:
        raise DataError(f"{p}: the bonafide/spoof key is in column {key + 1}; expected SPEAKER FILE ... KEY")
    names = list(columns)
    if names.index("key") != key:  # not the expected layout: name the columns by position
        names = ["speaker", "file"] + [f"col{i + 1}" for i in range(2, key + 1)]
        names[key] = "key"
        if key >= 3:
            names[key - 1] = "attack"
    attack = names.index("attack") if "attack" in names else None
    base = Path(audio_dir) if audio_dir is not None else p.parent
    items, bad = [], 0
    for tokens in rows:
        if len(tokens) <= max(key, 1) or tokens[key].lower() not in PROTOCOL_KEYS:
            bad += 1
            continue
        label = PROTOCOL_KEYS[tokens[key].lower()]
        gen = tokens[attack] if attack is not None and attack < len(tokens) else ""
        extra = {}
        for i, tok in enumerate(tokens):
            name = names[i] if i < len(names) else f"col{i + 1}"
            if name in ("speaker", "file", "attack", "key") or (i >= len(names) and tok == "-"):
                continue
            extra[name] = tok
        items.append(Item(_audio_path(base, tokens[1]), label, speaker=tokens[0], source=source,
                          generator=gen if label == 1 and gen.lower() not in ("-", "bonafide") else "",
                          lang="en", extra=extra))
    if bad:
        log.warning("%s: skipped %d of %d rows without a bonafide/spoof key in column %d", p, bad, len(rows),
                    key + 1)
    return keep_existing(items, hint=f"is {base} the folder that holds the audio?")


def read_asvspoof2019(protocol: str | os.PathLike, audio_dir: str | os.PathLike | None = None) -> list[Item]:
    """ASVspoof 2019 LA (or PA) CM protocol: ``SPK FILE - SYSTEM KEY``, e.g. ``LA_0079 LA_T_1271820 - A01
    spoof``. Audio: ``AUDIO_DIR/FILE.flac`` (default: the protocol's folder). The system id (A01-A19) is
    the generator; the third column (PA: environment) goes into ``extra["environment"]``."""
    return _read_whitespace_protocol(protocol, audio_dir, ASVSPOOF2019_COLUMNS, "asvspoof2019")


def read_asvspoof2021(keys: str | os.PathLike, audio_dir: str | os.PathLike | None = None) -> list[Item]:
    """ASVspoof 2021 LA / DF key file (``keys/CM/trial_metadata.txt``).

    LA: ``LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval``; DF: ``LA_0023 DF_E_2000011 nocodec
    asvspoof A14 spoof notrim progress traditional_vocoder - - - -``. The file id is column 2; the key
    column is found by its values (bonafide/spoof); the attack id before it is the generator. Codec,
    transmission / source corpus, trim, subset (and DF's vocoder type) go into ``extra``.
    """
    rows = _protocol_rows(Path(keys))
    first = rows[0] if rows else []
    prefix = first[1][:3].upper() if len(first) > 1 else ""
    track = prefix[:2] if prefix in ("LA_", "DF_", "PA_") else ("DF" if len(first) > 8 else "LA")
    columns = ASVSPOOF2021_DF_COLUMNS if track == "DF" else ASVSPOOF2021_LA_COLUMNS  # PA: named by position
    return _read_whitespace_protocol(keys, audio_dir, columns, f"asvspoof2021-{track.lower()}", rows)


def read_asvspoof5(protocol: str | os.PathLike, audio_dir: str | os.PathLike | None = None) -> list[Item]:
    """ASVspoof 5 protocol (``ASVspoof5.{train,dev,eval}*.tsv``): ``SPK FILE GENDER CODEC CODEC_Q CODEC_SEED
    ATTACK_TAG ATTACK_LABEL KEY TMP``. The attack label (A01-A32) is the generator; gender, codec, codec_q,
    codec_seed, attack_tag and tmp go into ``extra``."""
    return _read_whitespace_protocol(protocol, audio_dir, ASVSPOOF5_COLUMNS, "asvspoof5")


def read_in_the_wild(meta_csv: str | os.PathLike, audio_dir: str | os.PathLike | None = None) -> list[Item]:
    """In-the-Wild ``meta.csv`` (``file,speaker,label``; labels ``bona-fide`` / ``spoof``).

    Audio: ``AUDIO_DIR/file`` (default: the folder of ``meta.csv``). The data set names no generators.
    """
    p = Path(meta_csv)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    base = Path(audio_dir) if audio_dir is not None else p.parent
    items = []
    with p.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        fields = [c.strip().lower() for c in reader.fieldnames or []]
        if not {"file", "label"} <= set(fields):
            raise DataError(f"{p}: In-the-Wild meta.csv needs the columns file,speaker,label (found "
                            f"{reader.fieldnames})")
        for lineno, raw in enumerate(reader, start=2):
            row = {str(k).strip().lower(): (v or "").strip() for k, v in raw.items() if k is not None}
            try:
                label = parse_label(row["label"])
            except DataError as err:
                raise DataError(f"{p}:{lineno}: {err}") from None
            items.append(Item(str(base / row["file"]), label, speaker=row.get("speaker", ""),
                              source="in-the-wild", lang="en",
                              extra={k: v for k, v in row.items() if k not in ("file", "speaker", "label")}))
    return keep_existing(items, hint=f"is {base} the folder that holds the audio?")


def detect_protocol(path: str | os.PathLike) -> str:
    """Which of :data:`PROTOCOL_FORMATS` a label file is in, from its first line."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such protocol file")
    with p.open(encoding="utf-8", errors="replace") as f:
        first = next((line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")), "")
    if not first:
        raise DataError(f"{p}: empty protocol file")
    if "," in first:
        header = {c.strip().lower() for c in next(csv.reader([first]))}
        if {"path", "label"} <= header:
            return "manifest"
        if {"file", "label"} <= header:
            return "in-the-wild"
        raise DataError(f"{p}: a CSV needs the columns path,label (manifest) or file,speaker,label "
                        f"(In-the-Wild); found {sorted(header)}")
    tokens = first.split()
    file_id = tokens[1].upper() if len(tokens) > 1 else ""
    if len(tokens) == 5:
        return "asvspoof2019"
    if len(tokens) == 10 and not file_id.startswith(("LA_", "DF_", "PA_")):
        return "asvspoof5"
    if len(tokens) >= 6:
        return "asvspoof2021"
    raise DataError(f"{p}: unrecognised protocol (first line {first[:80]!r}, {len(tokens)} columns); "
                    "expected an ASVspoof 2019/2021/5 protocol, an In-the-Wild meta.csv or a path,label CSV")


def read_protocol(path: str | os.PathLike, audio_dir: str | os.PathLike | None = None, *,
                  fmt: str | None = None) -> list[Item]:
    """Read any supported label file, its format sniffed from the first line (or given as ``fmt``).

    ``audio_dir``: where the audio lies (default: the label file's folder); for a manifest it is the root
    of relative paths.
    """
    fmt = fmt or detect_protocol(path)
    if fmt == "manifest":
        return read_manifest(path, root=audio_dir)
    readers = {"in-the-wild": read_in_the_wild, "asvspoof2019": read_asvspoof2019,
               "asvspoof2021": read_asvspoof2021, "asvspoof5": read_asvspoof5}
    if fmt not in readers:
        raise DataError(f"unknown protocol format {fmt!r} (one of {', '.join(PROTOCOL_FORMATS)})")
    return readers[fmt](path, audio_dir)


def read_items(*, real: str | os.PathLike | None = None, fake: str | os.PathLike | None = None,
               manifest: str | os.PathLike | None = None, protocol: str | os.PathLike | None = None,
               audio_dir: str | os.PathLike | None = None) -> list[Item]:
    """The labelled recordings named by folders (``real`` and/or ``fake``), a ``manifest`` CSV and/or a
    ``protocol`` (with ``audio_dir``), together. A file named twice is kept once; a file named with both
    labels, or no usable recording at all, raises DataError."""
    if not (real or fake or manifest or protocol):
        raise DataError("give the recordings: --real/--fake folders, a --manifest CSV and/or a --protocol FILE")
    if audio_dir is not None and not protocol and not manifest:
        raise DataError("--audio-dir goes with --protocol or --manifest")
    items: list[Item] = []
    if real or fake:
        items += read_folders(real, fake)
    if manifest:
        items += read_manifest(manifest, root=audio_dir)
    if protocol:
        items += read_protocol(protocol, audio_dir)
    seen: dict[str, Item] = {}
    for it in items:
        key = os.path.realpath(it.path)
        if key in seen and seen[key].label != it.label:
            raise DataError(f"{it.path} is labelled both real and synthetic")
        seen.setdefault(key, it)
    if not seen:
        raise DataError("no usable recordings (all listed files missing?)")
    return list(seen.values())
