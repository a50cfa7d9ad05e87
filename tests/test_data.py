"""Data readers on small generated fixtures: folders, manifests, ASVspoof 2019/2021/5, In-the-Wild."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from voiceguard import data
from voiceguard.errors import DataError

SR = 16_000


def _audio(path: Path, seconds: float = 0.1) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(SR * seconds)) / SR
    sf.write(str(path), (0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)
    return path


def _protocol(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


ASV2019 = ["LA_0079 LA_T_1138215 - - bonafide",
           "LA_0079 LA_T_1271820 - A01 spoof",
           "LA_0080 LA_T_1000001 - A02 spoof",
           "LA_0080 LA_T_9999999 - A02 spoof"]  # no audio: reported and skipped
ASV2021_LA = ["LA_0009 LA_E_5464494 alaw ita_tx bonafide bonafide notrim eval",
              "LA_0009 LA_E_9332881 alaw ita_tx A07 spoof notrim eval",
              "LA_0010 LA_E_1000002 none - A19 spoof trim progress"]
ASV2021_DF = ["LA_0023 DF_E_2000011 nocodec asvspoof A14 spoof notrim progress traditional_vocoder - - - -",
              "LA_0023 DF_E_2000012 low_mp3 asvspoof - bonafide notrim eval bonafide - - - -",
              "TEF2 DF_E_2000013 high_m4a vcc2020 Task1-team20 spoof notrim eval neural_vocoder_nonautoregressive "
              "- - - -"]
ASV5 = ["T_4850 T_0000000000 F - - - AC3 A05 spoof -",
        "T_1138 T_0000000001 M - - - bonafide bonafide bonafide -",
        "T_1138 T_0000000002 M mp3 4 1 AC1 A11 spoof -"]


def _ids(lines: list[str]) -> list[str]:
    return [line.split()[1] for line in lines]


def test_asvspoof2019(tmp_path, caplog):
    audio = tmp_path / "flac"
    for fid in _ids(ASV2019)[:3]:
        _audio(audio / f"{fid}.flac")
    proto = _protocol(tmp_path / "ASVspoof2019.LA.cm.train.trn.txt", ASV2019)
    with caplog.at_level(logging.WARNING, logger="voiceguard.data"):
        items = data.read_asvspoof2019(proto, audio)
    assert [Path(it.path).name for it in items] == ["LA_T_1138215.flac", "LA_T_1271820.flac", "LA_T_1000001.flac"]
    assert [it.label for it in items] == [0, 1, 1]
    assert [it.generator for it in items] == ["", "A01", "A02"]
    assert [it.speaker for it in items] == ["LA_0079", "LA_0079", "LA_0080"]
    assert items[0].group("generator") == "bonafide" and items[1].group("generator") == "A01"
    assert "LA_T_9999999" in caplog.text and "skipped 1 of 4" in caplog.text


def test_asvspoof2021_la_key_found_by_value(tmp_path):
    for fid in _ids(ASV2021_LA):
        _audio(tmp_path / "wav" / f"{fid}.flac")
    items = data.read_asvspoof2021(_protocol(tmp_path / "trial_metadata.txt", ASV2021_LA), tmp_path / "wav")
    assert [it.label for it in items] == [0, 1, 1]
    assert [it.generator for it in items] == ["", "A07", "A19"]
    assert items[1].extra == {"codec": "alaw", "transmission": "ita_tx", "trim": "notrim", "subset": "eval"}
    assert items[0].source == "asvspoof2021-la" and items[2].group("codec") == "none"


def test_asvspoof2021_df(tmp_path):
    for fid in _ids(ASV2021_DF):
        _audio(tmp_path / f"{fid}.flac")
    items = data.read_asvspoof2021(_protocol(tmp_path / "trial_metadata.txt", ASV2021_DF))  # audio beside it
    assert [it.label for it in items] == [1, 0, 1]
    assert [it.generator for it in items] == ["A14", "", "Task1-team20"]
    assert items[2].extra["corpus"] == "vcc2020" and items[2].extra["vocoder"].startswith("neural")
    assert items[0].source == "asvspoof2021-df" and items[1].group("codec") == "low_mp3"


def test_asvspoof5(tmp_path):
    for fid in _ids(ASV5):
        _audio(tmp_path / "flac_T" / f"{fid}.flac")
    items = data.read_asvspoof5(_protocol(tmp_path / "ASVspoof5.train.tsv", ASV5), tmp_path / "flac_T")
    assert [it.label for it in items] == [1, 0, 1]
    assert [it.generator for it in items] == ["A05", "", "A11"]
    assert items[2].extra["codec"] == "mp3" and items[2].extra["gender"] == "M"
    assert items[2].extra["attack_tag"] == "AC1" and items[0].speaker == "T_4850"


def test_in_the_wild(tmp_path):
    d = tmp_path / "release_in_the_wild"
    for name in ("0.wav", "1.wav"):
        _audio(d / name)
    meta = d / "meta.csv"
    meta.write_text("file,speaker,label\n0.wav,Alec Guinness,spoof\n1.wav,Alec Guinness,bona-fide\n"
                    "2.wav,Barack Obama,spoof\n")
    items = data.read_in_the_wild(meta)
    assert [(Path(it.path).name, it.label, it.speaker) for it in items] == [
        ("0.wav", 1, "Alec Guinness"), ("1.wav", 0, "Alec Guinness")]
    assert items[0].source == "in-the-wild"
    meta.write_text("file,speaker,label\n0.wav,A,maybe\n")
    with pytest.raises(DataError, match="meta.csv:2: unknown label 'maybe'"):
        data.read_in_the_wild(meta)


@pytest.mark.parametrize("lines,fmt", [(ASV2019, "asvspoof2019"), (ASV2021_LA, "asvspoof2021"),
                                       (ASV2021_DF, "asvspoof2021"), (ASV5, "asvspoof5"),
                                       (["file,speaker,label", "a.wav,x,spoof"], "in-the-wild"),
                                       (["path,label,generator", "a.wav,fake,g"], "manifest")])
def test_detect_and_read_protocol(tmp_path, lines, fmt):
    proto = _protocol(tmp_path / "proto.txt", lines)
    assert data.detect_protocol(proto) == fmt
    first = lines[1].split(",")[0] if "," in lines[0] else lines[0].split()[1]
    _audio(tmp_path / "audio" / (first if first.endswith(".wav") else f"{first}.flac"))
    items = data.read_protocol(proto, tmp_path / "audio")
    assert len(items) == 1 and Path(items[0].path).stem == Path(first).stem


def test_flac_subfolder_and_wav_fallback(tmp_path):
    _audio(tmp_path / "flac" / "LA_T_1138215.flac")
    _audio(tmp_path / "LA_T_1271820.wav")
    items = data.read_protocol(_protocol(tmp_path / "p.txt", ASV2019[:2]), tmp_path)
    assert [Path(it.path).relative_to(tmp_path).as_posix() for it in items] == [
        "flac/LA_T_1138215.flac", "LA_T_1271820.wav"]


def test_missing_files_are_counted_not_fatal(tmp_path, caplog):
    lines = [f"LA_0001 LA_T_{i:07d} - A01 spoof" for i in range(25)]
    with caplog.at_level(logging.WARNING, logger="voiceguard.data"):
        items = data.read_protocol(_protocol(tmp_path / "p.txt", lines), tmp_path / "nowhere")
    assert items == []
    assert caplog.text.count("no such file") == data.MAX_MISSING_LOGGED
    assert "skipped 25 of 25" in caplog.text and "nowhere" in caplog.text


@pytest.mark.parametrize("lines,match", [
    (["LA_E_1000001", "LA_E_1000002"], "unrecognised protocol"),  # a trial list: no keys
    (["LA_0009 LA_E_1 alaw ita_tx A07 maybe notrim eval"], "no column holds the key"),
    (["name,who,kind", "a,b,c"], "needs the columns"),
])
def test_bad_protocols(tmp_path, lines, match):
    with pytest.raises(DataError, match=match):
        data.read_protocol(_protocol(tmp_path / "p.txt", lines), tmp_path)


def test_rows_without_key_are_skipped(tmp_path, caplog):
    _audio(tmp_path / "LA_T_1271820.flac")
    lines = ["SPEAKER FILE ENV ATTACK KEY", ASV2019[1]]  # a header line
    with caplog.at_level(logging.WARNING, logger="voiceguard.data"):
        items = data.read_asvspoof2019(_protocol(tmp_path / "p.txt", lines), tmp_path)
    assert len(items) == 1 and "skipped 1 of 2 rows" in caplog.text


def test_read_items(tmp_path):
    _audio(tmp_path / "real" / "spk1" / "a.wav")
    _audio(tmp_path / "fake" / "b.wav")
    items = data.read_items(real=tmp_path / "real", fake=tmp_path / "fake")
    assert [(it.label, it.speaker, it.generator) for it in items] == [(0, "spk1", ""), (1, "fake", "fake")]
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,codec\nreal/spk1/a.wav,human,gsm\nmissing.wav,spoof,none\n")
    items = data.read_items(manifest=manifest)
    assert len(items) == 1 and items[0].extra == {"codec": "gsm"}
    both = data.read_items(real=tmp_path / "real", fake=tmp_path / "fake", manifest=manifest)
    assert sorted((Path(it.path).name, it.label) for it in both) == [("a.wav", 0), ("b.wav", 1)]  # a.wav once
    conflict = tmp_path / "c.csv"
    conflict.write_text("path,label\nreal/spk1/a.wav,spoof\n")
    with pytest.raises(DataError, match="both real and synthetic"):
        data.read_items(real=tmp_path / "real", manifest=conflict)
    with pytest.raises(DataError, match="give the recordings"):
        data.read_items()
    with pytest.raises(DataError, match="goes with --protocol"):
        data.read_items(real=tmp_path / "real", audio_dir=tmp_path)
    empty = _protocol(tmp_path / "p.txt", ASV2019[3:])
    with pytest.raises(DataError, match="no usable recordings"):
        data.read_items(protocol=empty, audio_dir=tmp_path)
