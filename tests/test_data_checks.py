"""The data layer's checks: one .txt cut into documents, fractions that leave a split empty, the prepared
cache's checksums and id ranges (issues 23, 24)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from partgm.data import PreparedData, prepare_dataset
from partgm.data.corpora import iter_documents, parse_split_spec, split_document
from partgm.data.prepare import FORMAT_VERSION, publish_dataset
from partgm.errors import PartgmError

PARAGRAPH = "the quick brown fox jumps over the lazy dog " * 3


def test_split_document_by_blank_lines_and_size():
    text = "one para\nstill one\n\n  \n\ntwo\r\n\r\nthree"
    assert split_document(text, "blank-lines") == ["one para\nstill one", "two", "three"]
    pieces = split_document("aaaa bbbb cccc dddd", "chars", 10)
    assert pieces == ["aaaa bbbb ", "cccc dddd"] and "".join(pieces) == "aaaa bbbb cccc dddd"
    assert split_document("x" * 25, "chars", 10) == ["x" * 10, "x" * 10, "x" * 5]
    assert parse_split_spec("chars:300") == ("chars", 300)
    for bad in ("chars:0", "chars:x", "lines", ""):
        with pytest.raises(PartgmError, match="split_documents"):
            parse_split_spec(bad)


@pytest.fixture
def one_file(tmp_path) -> Path:
    path = tmp_path / "input.txt"
    path.write_text("\n\n".join(f"{i} {PARAGRAPH}" for i in range(12)))
    return path


def test_a_single_txt_file_is_refused_with_the_way_out_then_split(tmp_path, one_file):
    with pytest.raises(PartgmError, match="split_documents=blank-lines"):
        prepare_dataset(str(one_file), "gpt2", 16, 0.2, tmp_path / "cache", progress=False)
    assert len(list(iter_documents(str(one_file), "blank-lines"))) == 12
    data = prepare_dataset(str(one_file), "gpt2", 16, 0.2, tmp_path / "cache", progress=False,
                           split_documents="blank-lines")
    assert data.header["splits"]["val"]["documents"] == 2 and len(data.val) > 0
    assert data.header["split_documents"] == "blank-lines"
    by_size = prepare_dataset(str(one_file), "gpt2", 16, 0.2, tmp_path / "cache", progress=False,
                              split_documents="chars:100")
    assert by_size.path != data.path  # part of the cache key


def test_a_fraction_leaving_no_training_documents_is_refused(tmp_path, one_file):
    with pytest.raises(PartgmError, match="leaves none for training"):
        prepare_dataset(str(one_file), "gpt2", 16, 0.9999, tmp_path / "cache", progress=False,
                        split_documents="blank-lines")


def test_validation_split_too_small_says_what_to_do(tmp_path):
    corpus = tmp_path / "docs"
    corpus.mkdir()
    (corpus / "big.txt").write_text(PARAGRAPH * 4)
    (corpus / "tiny.txt").write_text("hi")
    with pytest.raises(PartgmError, match="(train|val) split has .* fewer than .*data.val_fraction"):
        prepare_dataset(str(corpus), "gpt2", 32, 0.5, tmp_path / "cache", seed=0, progress=False)


def test_cache_checksums_catch_a_changed_file_and_old_caches_are_rebuilt(tmp_path, one_file):
    args = (str(one_file), "gpt2", 16, 0.2, tmp_path / "cache")
    data = prepare_dataset(*args, progress=False, split_documents="blank-lines")
    assert set(data.header["checksums"]) == {"train.bin", "val.bin"}
    train_bin = data.path / "train.bin"
    raw = bytearray(train_bin.read_bytes())
    raw[5] ^= 1  # same size, one bit flipped: the size check alone would not see it
    train_bin.write_bytes(bytes(raw))
    with pytest.raises(PartgmError, match="does not match the checksum"):
        PreparedData.load(data.path)
    rebuilt = prepare_dataset(*args, progress=False, split_documents="blank-lines")
    assert (rebuilt.path / "train.bin").read_bytes() != bytes(raw)  # rebuilt, not trained on
    PreparedData.load(rebuilt.path)  # intact again
    header_file = rebuilt.path / "header.json"
    header = json.loads(header_file.read_text())
    del header["checksums"]  # a cache written before checksums
    header_file.write_text(json.dumps(header))
    PreparedData.load(rebuilt.path)  # still readable, by size
    stamp = header_file.stat().st_mtime_ns
    again = prepare_dataset(*args, progress=False, split_documents="blank-lines")
    assert "checksums" in again.header and header_file.stat().st_mtime_ns != stamp  # rebuilt


def _fake(tmp_path, tokens: np.ndarray, labels: np.ndarray | None, vocab: int, classes: int) -> Path:
    def build(tmp: Path) -> dict:
        for split in ("train", "val"):
            (tmp / f"{split}.bin").write_bytes(tokens.astype(np.uint16).tobytes())
            if labels is not None:
                (tmp / f"{split}.labels.bin").write_bytes(labels.astype(np.int64).tobytes())
        rows = {"rows": len(tokens), "tokens": tokens.size, "documents": len(tokens)}
        return {"format_version": FORMAT_VERSION, "input_hash": "x", "vocab_size": vocab, "bos_id": None,
                "num_classes": classes, "dtype": "uint16", "length": tokens.shape[1],
                "splits": {"train": rows, "val": rows}}

    return publish_dataset(tmp_path / "c", tmp_path / "c" / "d", "x", build).path


def test_ids_and_labels_out_of_range_are_refused_up_front(tmp_path):
    ok = np.arange(8).reshape(2, 4)
    with pytest.raises(PartgmError, match="token id 7, outside the vocabulary of 5"):
        _fake(tmp_path, ok, np.array([0, 1]), vocab=5, classes=2)
    with pytest.raises(PartgmError, match="label 3, outside 0..1"):
        _fake(tmp_path, ok, np.array([0, 3]), vocab=8, classes=2)
    assert _fake(tmp_path, ok, np.array([0, 1]), vocab=8, classes=2).is_dir()
