"""Batch scanning: score every recording under some folders into one append-only CSV or JSONL file.

``scan(paths, "results.csv")`` finds the audio files (:func:`discover`), scores them with
:meth:`Detector.score_files` (which packs the windows of many short files into shared batches) in
``workers`` processes or on Ray, and appends one row per file (per file and channel with
``channels="each"``) as files finish. Rows have the fields of ``score --json`` (:data:`FIELDS`); a file that
cannot be read gets a row with ``error`` set and no score, and the scan goes on.

Crash safety: every file's rows go out in one ``write`` on an ``O_APPEND`` descriptor, ``os.fsync`` runs
every :data:`FSYNC_EVERY` rows and at the end. ``scan(..., resume=True)`` reads the output, cuts off a
half-written last line (:func:`read_output`), skips every path already there and re-does the rest, so an
interrupted scan ends with exactly one row per file and the scores of an uninterrupted one.

Parallelism: ``workers`` processes (``forkserver`` context where available, else ``spawn``) each load the
detector once, run torch on one thread and score chunks of files handed out on demand; the main process only
writes rows. A worker that dies (segfault, OOM kill) is replaced; the files of its chunk not yet reported are
retried one by one, and a file that kills a worker on its own gets an error row of kind ``worker-crash``.
``engine="ray"`` maps the same chunk scoring over Ray actors (the optional ``voiceguard[ray]`` extra).

No printing here: progress goes to a callback that receives a :class:`ScanProgress` after every file.
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from .errors import DataError, VoiceGuardError

log = logging.getLogger(__name__)

#: columns of a scan's output, in order: the fields of ``score --json`` flattened to one row
FIELDS: tuple[str, ...] = (
    "path",  # as given on the command line / in the list / joined to the folder given
    "channel",  # None (empty) when channels were mixed
    "probability",  # calibrated P(synthetic) of the call (low-confidence when inconclusive); None: failed, unscored
    "verdict",  # "synthetic" | "human" | "inconclusive" | "error"
    "threshold",  # probability at and above which the verdict is "synthetic"
    "duration",  # s
    "speech_seconds",  # s of speech found by the VAD
    "top_start",  # s, start of the most suspicious scored window
    "top_end",  # s, its end
    "top_probability",  # its probability
    "model",  # "name:version" of the checkpoint
    "error",  # message; empty when scored
    "error_kind",  # VoiceGuardError.kind ("empty", "not-audio", "corrupt", "worker-crash", ...); empty when scored
    "reason",  # why the verdict is inconclusive ("1.3 s of speech (needs 2 s)", ...); empty otherwise
)
#: the columns of a scan output written before the ``reason`` column existed; such a file is still read, and a
#: resumed scan goes on writing its rows in that layout
LEGACY_FIELDS: tuple[str, ...] = FIELDS[:-1]
#: text columns: empty rather than None when missing
TEXT_FIELDS = frozenset({"error", "error_kind", "verdict", "model", "reason"})
INT_FIELDS = frozenset({"channel"})
FLOAT_FIELDS = frozenset({"probability", "threshold", "duration", "speech_seconds", "top_start", "top_end",
                          "top_probability"})
ERROR_VERDICT = "error"
OUTPUT_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
FSYNC_EVERY = 16  # rows between two os.fsync calls on the output
MAX_CHUNK = 32  # files handed to a worker at once (more: better packing; fewer: finer load balance)
INPROCESS_CHUNK = 64  # files per score_files call without workers (= the detector's packing look-ahead)
MAX_WORKER_RESTARTS = 50  # replacement workers started in one scan before giving up


def default_workers() -> int:
    """Worker processes used when none are asked for: one per CPU core, at most 4."""
    return max(1, min(os.cpu_count() or 1, 4))


# ---------------------------------------------------------------------------- discovery
def discover(paths: Iterable[str | os.PathLike], *, from_list: str | os.PathLike | None = None,
             recursive: bool = False, extensions: Iterable[str] | None = None) -> list[str]:
    """The files a scan of ``paths`` covers, in a stable order, each once, spelled as given.

    A folder contributes the files in it (and, with ``recursive``, below it) whose extension is one of
    ``extensions`` (default :func:`voiceguard.audio.audio_extensions`), sorted by name; hidden entries
    (names starting with ``.``) are skipped. A path that is not a folder is kept as it is, whatever its
    extension and even when it does not exist, so that it gets a row (an error row when it is not audio).
    ``from_list`` names a text file with one path per line (blank lines and lines starting with ``#`` are
    skipped); relative paths in it are taken relative to the current directory.

    Raises
    ------
    DataError
        when the list file cannot be read.
    """
    from .audio import audio_extensions

    exts = frozenset(e.lower() for e in (audio_extensions() if extensions is None else extensions))
    given = [os.fspath(p) for p in paths]
    if from_list is not None:
        given += read_path_list(from_list)
    out: list[str] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        key = os.path.normcase(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            out.append(p)

    for p in given:
        if os.path.isdir(p):
            for f in _walk(p, exts, recursive):
                add(f)
        else:
            add(p)
    return out


def read_path_list(path: str | os.PathLike) -> list[str]:
    """Paths listed in a text file, one a line (blank lines and ``#`` comments skipped)."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as err:
        raise DataError(f"{path}: cannot read the list of paths ({err.strerror or err})") from None
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def _walk(folder: str, exts: frozenset[str], recursive: bool) -> Iterator[str]:
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as err:
        log.warning("%s: cannot list this folder (%s); skipped", folder, err.strerror or err)
        return
    subdirs = []
    for e in entries:
        if e.name.startswith("."):
            continue
        try:
            if e.is_dir(follow_symlinks=False):
                subdirs.append(e)
            elif e.is_file() and os.path.splitext(e.name)[1].lower() in exts:
                yield os.path.join(folder, e.name)
        except OSError:
            continue
    if recursive:
        for d in subdirs:
            yield from _walk(os.path.join(folder, d.name), exts, recursive)


# ---------------------------------------------------------------------------- rows
def model_tag(info: dict) -> str:
    """``"name:version"`` of a detector's ``model_info``."""
    return f"{info.get('name', '?')}:{info.get('version', '?')}"


def _r(x: float | None, nd: int) -> float | None:
    return None if x is None else round(float(x), nd)


def result_row(res) -> dict:
    """One output row for a :class:`voiceguard.detector.ScoreResult`."""
    top = res.top_segment
    return {
        "path": res.path, "channel": res.channel, "probability": _r(res.probability, 6),
        "verdict": res.verdict, "threshold": _r(res.threshold, 6), "duration": _r(res.duration, 3),
        "speech_seconds": _r(res.speech_seconds, 2),
        "top_start": _r(top.start, 3) if top else None, "top_end": _r(top.end, 3) if top else None,
        "top_probability": _r(top.probability, 6) if top else None,
        "model": model_tag(res.model), "error": "", "error_kind": "", "reason": res.reason or "",
    }


def error_row(path: str, message: str, kind: str, *, threshold: float, model: str) -> dict:
    """The row of a file that could not be scored."""
    row = dict.fromkeys(FIELDS)
    row.update(path=path, verdict=ERROR_VERDICT, threshold=_r(threshold, 6), model=model,
               error=message, error_kind=kind)
    return row


def outcome_rows(outcome, detector) -> list[dict]:
    """Rows of one :class:`voiceguard.detector.FileOutcome`: one per channel, or one error row."""
    if outcome.error is not None:
        return [error_row(outcome.path, str(outcome.error), outcome.error.kind,
                          threshold=detector.threshold, model=model_tag(detector.model_info))]
    rows = [result_row(res) for res in outcome.results]
    for row in rows:
        row["path"] = outcome.path  # as given, even for a result whose path is None
    return rows


def score_chunk(detector, paths: Sequence[str], channels: str = "mix") -> Iterator[tuple[str, list[dict]]]:
    """Score ``paths`` in shared batches; yields ``(path, rows)`` in order, never raises for one file.

    An unexpected exception (not a :class:`VoiceGuardError`, which ``score_files`` already turns into an
    error outcome) stops the shared generator; the files not yet reported are then scored one by one, and a
    file that raises on its own gets an error row of kind ``internal``.
    """
    reported = 0
    try:
        for outcome in detector.score_files(list(paths), channels=channels):
            yield paths[reported], outcome_rows(outcome, detector)
            reported += 1
        return
    except Exception as err:  # noqa: BLE001 - one bad file must not end the scan
        if len(paths) - reported == 1:
            p = paths[reported]
            log.warning("%s: unexpected error while scoring: %r", p, err)
            yield p, [error_row(p, f"{p}: unexpected error while scoring ({type(err).__name__}: {err})",
                                "internal", threshold=detector.threshold, model=model_tag(detector.model_info))]
            return
    for p in paths[reported:]:
        yield from score_chunk(detector, [p], channels)


def parse_row(raw: dict) -> dict:
    """Normalise a row read back from CSV (all strings) or JSON to the types :data:`FIELDS` promise.

    Raises
    ------
    ValueError
        when a field is missing or does not parse.
    """
    row = {}
    for k in FIELDS:
        v = raw.get(k) if k == "reason" else raw[k]  # rows written before the reason column have none
        if v is None or v == "":
            v = "" if k in TEXT_FIELDS else None
        elif k in INT_FIELDS:
            v = int(v)
        elif k in FLOAT_FIELDS:
            v = float(v)
        else:
            v = str(v)
        row[k] = v
    if not row["path"]:
        raise ValueError("row without a path")
    return row


# ---------------------------------------------------------------------------- output files
def output_format(path: str | os.PathLike) -> str:
    """``"csv"`` or ``"jsonl"``, from the output's extension."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    try:
        return OUTPUT_FORMATS[ext]
    except KeyError:
        raise DataError(f"{path}: unknown output format {ext or '(no extension)'!r}; "
                        "name it .csv or .jsonl") from None


def _encode_csv(values: Sequence) -> bytes:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buf.getvalue().encode("utf-8", errors="surrogateescape")


def encode_row(row: dict, fmt: str, fields: Sequence[str] = FIELDS) -> bytes:
    """One row as a line of ``fmt`` (``"csv"`` or ``"jsonl"``), newline included; a CSV row has the columns
    ``fields`` (:data:`FIELDS`, or :data:`LEGACY_FIELDS` when appending to an older output)."""
    if fmt == "csv":
        return _encode_csv([row.get(k) for k in fields])
    return (json.dumps({k: row.get(k) for k in FIELDS}, ensure_ascii=True) + "\n").encode("ascii")


def _records(data: bytes, pos: int, fmt: str) -> Iterator[tuple[int, int]]:
    """(start, end) byte offsets of the complete (newline-terminated) records of ``data`` from ``pos``."""
    start = pos
    quotes = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return
        if fmt == "csv":  # a newline inside a quoted field does not end the record
            quotes += data.count(b'"', pos, nl)
            if quotes % 2:
                pos = nl + 1
                continue
        yield start, nl + 1
        start = pos = nl + 1
        quotes = 0


def _parse_record(text: str, fmt: str, fields: Sequence[str] = FIELDS) -> dict | None:
    try:
        if fmt == "csv":
            values = next(csv.reader(io.StringIO(text)))
            if len(values) != len(fields):
                return None
            return parse_row(dict(zip(fields, values, strict=True)))
        obj = json.loads(text)
        return parse_row(obj) if isinstance(obj, dict) else None
    except (ValueError, KeyError, TypeError, StopIteration, csv.Error):
        return None


def _header(line: bytes) -> tuple[str, ...]:
    """The column names of a CSV's first line."""
    return tuple(line.decode("utf-8", errors="replace").strip().split(","))


def csv_layout(path: str | os.PathLike) -> tuple[str, ...]:
    """The columns of an existing CSV scan output: :data:`FIELDS`, or :data:`LEGACY_FIELDS` for a file written
    before the ``reason`` column (also :data:`FIELDS` for an empty or missing file)."""
    try:
        with open(path, "rb") as fh:
            first = fh.readline()
    except FileNotFoundError:
        return FIELDS
    return LEGACY_FIELDS if _header(first) == LEGACY_FIELDS else FIELDS


def read_output(path: str | os.PathLike, *, repair: bool = False) -> tuple[list[dict], int]:
    """Rows of a scan output, and how many bytes at its end are not whole rows.

    Rows always have every key of :data:`FIELDS`; those of an output written before the ``reason`` column
    get an empty reason.

    A crash can leave a half-written last line (no newline yet), a power cut a tail of garbage; both are
    left out, and with ``repair`` cut off the file. When something was cut and the last kept rows are
    per-channel rows, that file's rows are cut too (its other channels may be lost), so that it is scored
    again as a whole. Damage anywhere but at the end is not repaired: it is reported.

    Raises
    ------
    DataError
        when the file is not a scan output (a CSV whose header is neither :data:`FIELDS` nor
        :data:`LEGACY_FIELDS`, a first line that is
        not a row) or has a line that is not a row before its last one.
    """
    fmt = output_format(path)
    data = Path(path).read_bytes()
    pos = 0
    not_ours = f"{path}: not a voiceguard scan output; choose another output file"
    fields = FIELDS
    if fmt == "csv":
        nl = data.find(b"\n")
        if nl >= 0:
            header = _header(data[:nl])
            if header == LEGACY_FIELDS:
                fields = LEGACY_FIELDS
            elif header != FIELDS:
                raise DataError(f"{path}: not a voiceguard scan output (its header is "
                                f"{','.join(header)[:120]!r}); choose another output file")
            pos = nl + 1
        elif data and not _encode_csv(FIELDS).startswith(data):  # also covers a torn legacy header
            raise DataError(not_ours)
    rows: list[dict] = []
    starts: list[int] = []
    good_end = pos
    records = list(_records(data, pos, fmt))
    for i, (start, end) in enumerate(records):
        text = data[start:end].decode("utf-8", errors="surrogateescape")
        if not text.strip():
            good_end = end
            continue
        row = _parse_record(text, fmt, fields)
        if row is None:
            if not rows and fmt == "jsonl":
                raise DataError(not_ours)
            if i < len(records) - 1:
                raise DataError(f"{path}: line {text[:60]!r}... in the middle is not a scan row; the file was "
                                "damaged or edited: fix or move it")
            break
        rows.append(row)
        starts.append(start)
        good_end = end
    tail = data[good_end:]
    if fmt == "jsonl" and not rows and tail.strip() and not (
            tail.startswith(b'{"path": ') or b'{"path": '.startswith(tail)):
        raise DataError(not_ours)
    dropped = len(data) - good_end
    if dropped and rows and rows[-1]["channel"] is not None:
        last = rows[-1]["path"]
        while rows and rows[-1]["path"] == last:
            rows.pop()
            good_end = starts.pop()
        dropped = len(data) - good_end
    if dropped and repair:
        log.warning("%s: cut %d bytes of an incomplete last row (from an interrupted scan)", path, dropped)
        with open(path, "r+b") as fh:
            fh.truncate(good_end)
            fh.flush()
            os.fsync(fh.fileno())
    return rows, dropped


def read_rows(path: str | os.PathLike) -> list[dict]:
    """The complete rows of a scan output (read only; an incomplete tail is ignored)."""
    return read_output(path)[0]


class RowWriter:
    """Appends rows to a CSV or JSONL file: one ``write`` per file, ``os.fsync`` every ``fsync_every`` rows.

    With ``resume=False`` the file must not exist yet; with ``resume=True`` rows are appended to it (call
    :func:`read_output` with ``repair=True`` first), in the CSV's own layout (:func:`csv_layout`: an output
    written before the ``reason`` column goes on without it). A CSV gets its header when it is empty.
    """

    def __init__(self, path: str | os.PathLike, *, resume: bool = False, fsync_every: int = FSYNC_EVERY) -> None:
        self.path = os.fspath(path)
        self.format = output_format(path)
        self.fsync_every = max(1, int(fsync_every))
        parent = os.path.dirname(self.path)
        if parent:
            os.makedirs(parent, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (0 if resume else os.O_EXCL)
        try:
            self._fd = os.open(self.path, flags, 0o644)
        except FileExistsError:
            raise DataError(f"{self.path} already exists; resume it (--resume) or choose another output") from None
        self._unsynced = 0
        self.fields = csv_layout(self.path) if self.format == "csv" and resume else FIELDS
        if self.format == "csv" and os.fstat(self._fd).st_size == 0:
            self._write(_encode_csv(self.fields))

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def write(self, rows: Sequence[dict]) -> None:
        """Append the rows of one file (in one write) and sync every few rows."""
        self._write(b"".join(encode_row(r, self.format, self.fields) for r in rows))
        self._unsynced += len(rows)
        if self._unsynced >= self.fsync_every:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._fd)
        self._unsynced = 0

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.sync()
            finally:
                os.close(self._fd)
                self._fd = -1

    def __enter__(self) -> "RowWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------- progress and summary
@dataclass
class ScanProgress:
    """Handed to the progress callback after every file (and once at the start)."""

    files_done: int  # files with rows in the output, including those of earlier runs
    files_total: int
    audio_seconds: float  # audio in those files, s
    failed: int  # files with an error row
    new_files: int  # files scored in this run
    new_audio_seconds: float  # audio scored in this run, s
    elapsed: float  # s since this run started
    path: str | None = None  # the file just written; None for the first call


@dataclass
class ScanSummary:
    """What a scan did: counts over the rows of its input files (earlier runs included)."""

    out: str
    files: int  # input files
    scored: int  # files with a score (any verdict but "error")
    failed: int  # files with an error row
    rows: int  # rows for the input files (more than files with channels="each")
    new_files: int  # files scored in this run (the rest were already in the output)
    audio_seconds: float  # s of audio in the scored files
    new_audio_seconds: float  # s of audio scored in this run
    wall_seconds: float  # s this run took
    repaired_bytes: int = 0  # bytes of an incomplete last row cut from the output on resume
    by_verdict: dict[str, int] = field(default_factory=dict)  # rows per verdict ("error" included)
    by_error_kind: dict[str, int] = field(default_factory=dict)  # failed files per error kind

    @property
    def ok(self) -> bool:
        """Whether every file was scored."""
        return self.failed == 0


class _Tally:
    def __init__(self) -> None:
        self.files: set[str] = set()
        self.failed = 0
        self.rows = 0
        self.audio = 0.0
        self.verdicts: Counter[str] = Counter()
        self.kinds: Counter[str] = Counter()

    def add(self, rows: Sequence[dict]) -> float:
        """Count one file's rows; returns its duration in seconds."""
        path = rows[0]["path"]
        first = path not in self.files
        self.files.add(path)
        self.rows += len(rows)
        for r in rows:
            self.verdicts[r["verdict"] or ERROR_VERDICT] += 1
        dur = 0.0
        if rows[0].get("error"):
            if first:
                self.failed += 1
                self.kinds[rows[0].get("error_kind") or "error"] += 1
        elif first:
            dur = float(rows[0].get("duration") or 0.0)
            self.audio += dur
        return dur


# ---------------------------------------------------------------------------- engines
@dataclass(frozen=True)
class DetectorSpec:
    """How a worker loads its detector (picklable: workers load the checkpoint themselves)."""

    checkpoint: str | None = None  # weights path; None: the default checkpoint
    device: str | None = None
    batch_size: int | None = None  # windows per model call; None: the detector's default
    threshold: float | None = None

    def load(self):
        from .detector import Detector

        kwargs = {} if self.batch_size is None else {"batch_size": self.batch_size}
        return Detector.load(self.checkpoint, device=self.device, threshold=self.threshold, **kwargs)


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i: i + size]) for i in range(0, len(items), size)]


def _chunk_size(n_files: int, n_workers: int) -> int:
    return max(1, min(MAX_CHUNK, math.ceil(n_files / max(1, 4 * n_workers))))


def _inprocess(detector, paths: Sequence[str], channels: str, chunk: int) -> Iterator[tuple[str, list[dict]]]:
    for part in _chunks(paths, chunk):
        yield from score_chunk(detector, part, channels)


def _worker_main(conn, spec: DetectorSpec, channels: str) -> None:
    """A worker process: load the detector once, then score the chunks the main process sends."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    try:
        import torch

        torch.set_num_threads(1)
        detector = spec.load()
    except BaseException as err:  # noqa: BLE001 - report any start-up failure to the main process
        conn.send(("init-error", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the main process is gone
            return
        if msg is None:
            return
        chunk_id, paths = msg
        for path, rows in score_chunk(detector, paths, channels):
            conn.send(("file", chunk_id, path, rows))
        conn.send(("chunk-done", chunk_id))


def _mp_context():
    import multiprocessing as mp

    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["torch", "voiceguard.detector"])  # imported once, shared by the workers
        return ctx
    return mp.get_context("spawn")


class _Slot:
    """One worker process and the chunk it is scoring."""

    def __init__(self, ctx, spec: DetectorSpec, channels: str) -> None:
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, spec, channels), daemon=True,
                                name="voiceguard-scan")
        self.proc.start()
        child.close()
        self.ready = False
        self.chunk: list[str] | None = None
        self.chunk_id = -1
        self.reported: set[str] = set()
        self.dead = False

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (OSError, ValueError):
            pass


def _pool(paths: Sequence[str], spec: DetectorSpec, channels: str, n_workers: int, chunk: int,
          crash_row: Callable[[str, str], dict]) -> Iterator[tuple[str, list[dict]]]:
    """Score ``paths`` in ``n_workers`` processes; yields ``(path, rows)`` in completion order."""
    from multiprocessing.connection import wait

    ctx = _mp_context()
    queue: deque[list[str]] = deque(_chunks(paths, chunk))
    n_workers = max(1, min(n_workers, len(queue)))
    slots = [_Slot(ctx, spec, channels) for _ in range(n_workers)]
    restarts = 0
    ever_ready = False
    finished = False
    next_id = 0
    try:
        while True:
            for s in slots:  # hand out work
                if s.ready and s.chunk is None and queue and not s.dead:
                    s.chunk, s.chunk_id, s.reported = queue.popleft(), next_id, set()
                    next_id += 1
                    try:
                        s.conn.send((s.chunk_id, s.chunk))
                    except (OSError, ValueError):
                        pass  # its death shows up on the sentinel
            live = [s for s in slots if not s.dead]
            if not queue and all(s.chunk is None for s in live):
                finished = True
                return
            ready = wait([s.conn for s in live] + [s.proc.sentinel for s in live])
            for s in live:
                died = s.proc.sentinel in ready
                if s.conn in ready or died:
                    try:
                        while s.conn.poll():
                            msg = s.conn.recv()
                            kind = msg[0]
                            if kind == "ready":
                                s.ready = ever_ready = True
                            elif kind == "init-error":
                                raise VoiceGuardError(f"a scan worker could not load the detector: {msg[1]}",
                                                      kind="worker-start")
                            elif kind == "file" and msg[1] == s.chunk_id and msg[2] not in s.reported:
                                s.reported.add(msg[2])
                                yield msg[2], msg[3]
                            elif kind == "chunk-done" and msg[1] == s.chunk_id:
                                s.chunk = None
                    except (EOFError, OSError):
                        died = True
                if not died or s.dead:
                    continue
                s.proc.join(timeout=5)
                s.dead = True
                code = s.proc.exitcode
                if not s.ready and not ever_ready:
                    raise VoiceGuardError(f"a scan worker died while starting (exit code {code})",
                                          kind="worker-start")
                lost = [p for p in (s.chunk or []) if p not in s.reported]
                if len(lost) == 1 and len(s.chunk or []) == 1:  # it died on this file alone
                    log.warning("%s: a worker died while scoring it (exit code %s)", lost[0], code)
                    yield lost[0], [crash_row(lost[0], f"{lost[0]}: the worker process died while scoring "
                                                         f"this file (exit code {code})")]
                elif lost:  # isolate the culprit: retry the unreported files one at a time
                    log.warning("a worker died (exit code %s); retrying its %d unfinished files one by one",
                                code, len(lost))
                    queue.extendleft([p] for p in reversed(lost))
                s.chunk = None
                s.conn.close()
                if queue:  # replace it
                    restarts += 1
                    if restarts > MAX_WORKER_RESTARTS:
                        raise VoiceGuardError(f"scan workers died {restarts} times; giving up (last exit code "
                                              f"{code})", kind="worker-crash")
                    slots.append(_Slot(ctx, spec, channels))
            slots = [s for s in slots if not s.dead]
    finally:  # idle workers are asked to stop; busy ones (error, Ctrl-C, closed early) are terminated
        for s in slots:
            if finished and not s.conn.closed:
                s.stop()
            elif s.proc.is_alive():
                s.proc.terminate()
        deadline = time.monotonic() + 5
        for s in slots:
            s.proc.join(timeout=max(0.0, deadline - time.monotonic()))
            if s.proc.is_alive():
                s.proc.terminate()
                s.proc.join(timeout=2)
            if not s.conn.closed:
                s.conn.close()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__


class _RayScorer:
    """A Ray actor: loads the detector once and scores chunks of files."""

    def __init__(self, spec: DetectorSpec, channels: str, cwd: str) -> None:
        import torch

        os.chdir(cwd)  # paths are relative to the driver's directory, as given
        torch.set_num_threads(1)
        self.detector = spec.load()
        self.channels = channels

    def ping(self) -> int:
        return os.getpid()

    def score(self, paths: list[str]) -> list[tuple[str, list[dict]]]:
        return list(score_chunk(self.detector, paths, self.channels))


def _ray(paths: Sequence[str], spec: DetectorSpec, channels: str, n_workers: int, chunk: int,
         crash_row: Callable[[str, str], dict]) -> Iterator[tuple[str, list[dict]]]:
    """Score ``paths`` on Ray actors (a running cluster when initialised or ``RAY_ADDRESS`` is set, else a
    local instance with ``n_workers`` CPUs); yields ``(path, rows)`` as chunks finish.

    On a cluster, every node must see the files at the same paths and have voiceguard installed.
    """
    try:
        import ray
        from ray.exceptions import RayActorError, RayTaskError
    except ImportError:
        raise VoiceGuardError("--engine ray needs Ray, an optional dependency: pip install 'voiceguard[ray]'",
                              kind="missing-dependency") from None
    started = False
    if not ray.is_initialized():
        pkg_root = str(Path(__file__).resolve().parent.parent)
        pythonpath = os.pathsep.join(p for p in (pkg_root, os.environ.get("PYTHONPATH", "")) if p)
        local = not os.environ.get("RAY_ADDRESS")
        ray.init(num_cpus=max(1, n_workers) if local else None, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})
        started = True
    scorer = ray.remote(num_cpus=1)(_RayScorer)
    queue: deque[list[str]] = deque(_chunks(paths, chunk))
    n_workers = max(1, min(n_workers, len(queue)))
    cwd = os.getcwd()
    actors = [scorer.remote(spec, channels, cwd) for _ in range(n_workers)]
    pending: dict = {}  # ObjectRef -> (actor index, chunk)
    deaths = 0
    try:
        try:
            ray.get([a.ping.remote() for a in actors])
        except (RayActorError, RayTaskError) as err:
            raise VoiceGuardError(f"Ray scan workers could not load the detector: {_first_line(err)}",
                                  kind="worker-start") from None
        def feed(i: int) -> None:
            if queue:
                part = queue.popleft()
                pending[actors[i].score.remote(part)] = (i, part)

        for i in range(n_workers):
            feed(i)
        while pending:
            [ref], _ = ray.wait(list(pending), num_returns=1)
            i, part = pending.pop(ref)
            try:
                results = ray.get(ref)
            except (RayActorError, RayTaskError) as err:
                deaths += 1
                log.warning("a Ray scan worker died (%s)", _first_line(err))
                if deaths > MAX_WORKER_RESTARTS:
                    raise VoiceGuardError(f"Ray scan workers died {deaths} times; giving up",
                                          kind="worker-crash") from None
                if len(part) == 1:
                    yield part[0], [crash_row(part[0], f"{part[0]}: the worker process died while scoring "
                                                       "this file")]
                else:
                    queue.extendleft([p] for p in reversed(part))
                ray.kill(actors[i], no_restart=True)
                actors[i] = scorer.remote(spec, channels, cwd)
            else:
                yield from results
            feed(i)
    finally:
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if started:
            ray.shutdown()


# ---------------------------------------------------------------------------- the scan
def scan(inputs: Sequence[str | os.PathLike], out: str | os.PathLike, *,
         checkpoint: str | os.PathLike | None = None, device: str | None = None, batch_size: int | None = None,
         threshold: float | None = None, channels: str = "mix", workers: int | None = None, engine: str = "local",
         resume: bool = False, chunk_size: int | None = None,
         progress: Callable[[ScanProgress], None] | None = None, detector=None) -> ScanSummary:
    """Score ``inputs`` (file paths; see :func:`discover`) into the CSV/JSONL file ``out``.

    Parameters
    ----------
    inputs : sequence of paths
        files to score, written to the output as given (duplicates are scored once).
    out : path
        ``.csv`` or ``.jsonl``; must not exist unless ``resume``.
    checkpoint, device, batch_size, threshold
        how to load the detector (as :meth:`Detector.load`); ``batch_size`` is windows per model call
        (None: the detector's default).
    channels : {"mix", "each"}
    workers : int >= 0 or None
        worker processes (Ray actors with ``engine="ray"``); 0 or 1 scores in this process;
        None: :func:`default_workers`.
    engine : {"local", "ray"}
    resume : bool
        continue an existing output: repair its tail, skip the paths in it, score the rest.
    chunk_size : int > 0 or None
        files handed to a worker at once (default: a few chunks per worker, at most :data:`MAX_CHUNK`).
    progress : callable(ScanProgress) or None
        called at the start and after every file written.
    detector : Detector or None
        an already loaded detector (used in this process; workers load ``checkpoint`` themselves).

    Returns
    -------
    ScanSummary

    Raises
    ------
    DataError
        ``out`` exists without ``resume``, has an unknown extension, or is not a scan output.
    CheckpointError
        the checkpoint cannot be loaded.
    """
    t0 = time.monotonic()
    if channels not in ("mix", "each"):
        raise ValueError(f"channels must be 'mix' or 'each', got {channels!r}")
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    out = os.fspath(out)
    output_format(out)
    paths = list(dict.fromkeys(os.fspath(p) for p in inputs))
    if os.path.exists(out) and not resume:
        raise DataError(f"{out} already exists; resume it (--resume) or choose another output")

    from .checkpoint import resolve

    weights = str(resolve(checkpoint)[0].resolve())
    spec = DetectorSpec(weights, device, None if batch_size is None else int(batch_size), threshold)
    if detector is None:
        detector = spec.load()
    tag = model_tag(detector.model_info)

    def crash_row(path: str, message: str) -> dict:
        return error_row(path, message, "worker-crash", threshold=detector.threshold, model=tag)

    prior: list[dict] = []
    repaired = 0
    if resume and os.path.exists(out):
        prior, repaired = read_output(out, repair=True)
    wanted = set(paths)
    tally = _Tally()
    by_path: dict[str, list[dict]] = {}
    for row in prior:
        if row["path"] in wanted:
            by_path.setdefault(row["path"], []).append(row)
    for rows in by_path.values():
        tally.add(rows)
    todo = [p for p in paths if p not in by_path]
    n_workers = default_workers() if workers is None else max(0, int(workers))
    new_files, new_audio = 0, 0.0

    def report(path: str | None) -> None:
        if progress is not None:
            progress(ScanProgress(len(tally.files), len(paths), tally.audio, tally.failed, new_files, new_audio,
                                  time.monotonic() - t0, path))

    with RowWriter(out, resume=resume) as writer:
        report(None)
        if not todo:
            source: Iterator[tuple[str, list[dict]]] = iter(())
        elif engine == "ray":
            source = _ray(todo, spec, channels, max(1, n_workers),
                          chunk_size or _chunk_size(len(todo), max(1, n_workers)), crash_row)
        elif n_workers <= 1:
            source = _inprocess(detector, todo, channels, chunk_size or INPROCESS_CHUNK)
        else:
            source = _pool(todo, spec, channels, n_workers, chunk_size or _chunk_size(len(todo), n_workers),
                           crash_row)
        try:
            for path, rows in source:
                if path in tally.files or path not in wanted or not rows:
                    continue
                writer.write(rows)
                new_audio += tally.add(rows)
                new_files += 1
                report(path)
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()
    return ScanSummary(out=out, files=len(paths), scored=len(tally.files) - tally.failed, failed=tally.failed,
                       rows=tally.rows, new_files=new_files, audio_seconds=tally.audio,
                       new_audio_seconds=new_audio, wall_seconds=time.monotonic() - t0, repaired_bytes=repaired,
                       by_verdict=dict(tally.verdicts), by_error_kind=dict(tally.kinds))
