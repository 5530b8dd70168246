"""Tokenize a corpus once into fixed-length rows on disk, cached by a hash of everything that shapes them.

A prepared dataset is a directory holding ``train.bin`` and ``val.bin`` (raw ``[rows, length]`` arrays),
``tokenizer.json`` and ``header.json``. Documents are split into train / validation by a seeded shuffle;
within a split each document is tokenized and followed by EOS, all are concatenated and cut into chunks of
``length - 2`` tokens (the remainder is dropped), and each row is ``[BOS] chunk [EOS]``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from itertools import chain, islice
from pathlib import Path
from typing import IO, Any

import numpy as np
from tqdm import tqdm

from partgm.data.corpora import corpus_fingerprint, iter_documents, parse_split_spec
from partgm.data.tokenizers import Tokenizer, load_tokenizer, tokenizer_fingerprint
from partgm.errors import PartgmError
from partgm.fileio import remove_dead_temporaries

FORMAT_VERSION = 1
SPLITS = ("train", "val")
_BATCH_DOCS = 256


class PreparedData:
    """A prepared dataset directory; ``train`` / ``val`` are read-only memmaps of shape [rows, length].
    Class-conditional data (header ``num_classes`` > 0) also has ``labels[split]``: int64 memmaps [rows]
    from ``{split}.labels.bin``; image data has ``grid`` [height, width] and ``bos_id`` None."""

    def __init__(
        self, path: Path, header: dict[str, Any], train: np.memmap, val: np.memmap,
        labels: dict[str, np.memmap] | None = None,
    ) -> None:
        self.path = path
        self.header = header
        self.train = train
        self.val = val
        self.labels = labels or {}

    @property
    def vocab_size(self) -> int:
        return self.header["vocab_size"]

    @property
    def bos_id(self) -> int | None:
        return self.header["bos_id"]

    @property
    def eos_id(self) -> int | None:
        return self.header.get("eos_id")

    @property
    def length(self) -> int:
        return self.header["length"]

    def tokenizer(self) -> Tokenizer:
        return Tokenizer.from_file(self.path / "tokenizer.json", self.header["tokenizer"])

    @classmethod
    def load(cls, path: str | Path) -> PreparedData:
        """Open a prepared dataset, checking that its files are complete: their sizes, their checksums
        (``header["checksums"]``; datasets written before them are checked by size only) and the range
        of their token ids and labels."""
        path = Path(path)
        header_file = path / "header.json"
        if not header_file.is_file():
            raise PartgmError(f"'{path}' is not a prepared dataset (no header.json)")
        try:
            header = json.loads(header_file.read_text())
            version = header["format_version"]
            if version != FORMAT_VERSION:
                raise PartgmError(
                    f"'{header_file}' has format version {version}, not {FORMAT_VERSION}; prepare again"
                )
            dtype, length = np.dtype(header["dtype"]), int(header["length"])
            rows = {split: int(header["splits"][split]["rows"]) for split in SPLITS}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise PartgmError(
                f"'{header_file}' is unreadable or malformed ({type(exc).__name__}: {exc})"
            ) from None
        arrays = {}
        for split in SPLITS:
            file = path / f"{split}.bin"
            expected = rows[split] * length * dtype.itemsize
            found = file.stat().st_size if file.is_file() else 0
            if found != expected or not expected:
                raise PartgmError(
                    f"'{file}' is missing, empty or truncated ({found} bytes, header says {expected});"
                    f" delete '{path}' and prepare the data again"
                )
            arrays[split] = np.memmap(file, dtype=dtype, mode="r", shape=(rows[split], length))
        labels = {}
        if header.get("num_classes"):
            for split in SPLITS:
                file = path / f"{split}.labels.bin"
                found = file.stat().st_size if file.is_file() else 0
                if found != rows[split] * 8:
                    raise PartgmError(f"'{file}' is missing or truncated; delete '{path}' and prepare again")
                labels[split] = np.memmap(file, dtype=np.int64, mode="r", shape=(rows[split],))
        _check_checksums(path, header.get("checksums"))
        _check_ranges(path, header, arrays, labels)
        return cls(path, header, arrays["train"], arrays["val"], labels)


def file_checksum(file: Path) -> str:
    """sha256 hex digest of a file, read in 16 MiB blocks."""
    digest = hashlib.sha256()
    with open(file, "rb") as f:
        while block := f.read(1 << 24):
            digest.update(block)
    return digest.hexdigest()


def _check_checksums(path: Path, checksums: dict[str, str] | None) -> None:
    for name, expected in (checksums or {}).items():
        file = path / name
        if not file.is_file() or file_checksum(file) != expected:
            raise PartgmError(f"'{file}' does not match the checksum in its header.json (changed or corrupt"
                              f" since it was prepared); delete '{path}' and prepare the data again")


def _check_ranges(
    path: Path, header: dict[str, Any], arrays: dict[str, np.memmap], labels: dict[str, np.memmap]
) -> None:
    """Token ids in [0, vocab_size) and labels in [0, num_classes): a clear error here, not an index error
    deep inside a loss."""
    vocab, classes = int(header["vocab_size"]), int(header.get("num_classes") or 0)
    for split in SPLITS:
        top = int(arrays[split].max()) if arrays[split].size else 0
        if top >= vocab:
            raise PartgmError(f"'{path / f'{split}.bin'}' holds token id {top}, outside the vocabulary of"
                              f" {vocab} in its header; delete '{path}' and prepare the data again")
        if split in labels and labels[split].size:
            low, high = int(labels[split].min()), int(labels[split].max())
            if low < 0 or high >= classes:
                raise PartgmError(f"'{path / f'{split}.labels.bin'}' holds label {low if low < 0 else high},"
                                  f" outside 0..{classes - 1} ({classes} classes in its header); delete"
                                  f" '{path}' and prepare the data again")


def prepare_dataset(
    corpus: str,
    tokenizer: str,
    length: int,
    val_fraction: float,
    cache_dir: str | Path,
    seed: int = 0,
    progress: bool = True,
    split_documents: str = "none",
) -> PreparedData:
    """Tokenize ``corpus`` into ``cache_dir/<slug>-<hash12>``, or reuse that directory if already complete.
    ``split_documents`` cuts each document further (``none`` | ``blank-lines`` | ``chars:N``, see
    ``partgm.data.corpora.split_document``) before the train / validation split.

    The directory is built under a temporary name and renamed at the end, so an interrupted run leaves
    nothing half-written behind.
    """
    from partgm.data.synthetic import is_synthetic, prepare_synthetic

    if is_synthetic(corpus):  # drawn from a known process; the tokenizer is the identity over its ids
        return prepare_synthetic(corpus, length, val_fraction, cache_dir, publish_dataset, _reusable, FORMAT_VERSION)
    if length < 3:
        raise PartgmError(f"length={length} is too short (BOS, at least one token, EOS)")
    if not 0.0 < val_fraction < 1.0:
        raise PartgmError(f"val_fraction={val_fraction} must be in (0, 1)")
    parse_split_spec(split_documents)
    key = _input_hash(corpus, tokenizer, length, val_fraction, seed, split_documents)
    cache_dir = Path(cache_dir)
    out = cache_dir / f"{_slug(corpus, tokenizer, length)}-{key[:12]}"
    existing = _reusable(out, key)
    if existing is not None:
        return existing

    def documents() -> Iterator[str]:
        return iter_documents(corpus, split_documents)

    docs = tqdm(documents(), desc="reading corpus", unit="doc", disable=not progress)
    n_docs = sum(1 for _ in docs)
    if n_docs < 2:
        raise PartgmError(
            f"corpus '{corpus}' has {n_docs} document(s); the train/validation split is by document and needs"
            " at least 2: give more files, or cut the text with data.split_documents=blank-lines or"
            " data.split_documents=chars:N (docs/data.md)"
        )
    is_val = _val_mask(n_docs, val_fraction, seed)

    return publish_dataset(cache_dir, out, key, lambda tmp: {
        "format_version": FORMAT_VERSION,
        "input_hash": key,
        "corpus": corpus,
        **_build(tmp, documents, tokenizer, length, is_val, progress, corpus),
        "val_fraction": val_fraction,
        "seed": seed,
        "split_documents": split_documents,
    })


def publish_dataset(
    cache_dir: Path, out: Path, key: str, build: Callable[[Path], dict[str, Any]]
) -> PreparedData:
    """Build a prepared dataset all at once: ``build(tmp)`` writes the split files into a temporary
    directory and returns the header, which is written last; the directory is then renamed to ``out``
    (a concurrent process that published the same ``key`` first wins). Stale temporaries of dead
    processes are removed first; an interrupted build leaves nothing behind."""
    shutil.rmtree(out, ignore_errors=True)  # an earlier, broken or stale directory of the same name
    cache_dir.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(cache_dir)  # left by a prepare killed mid-way
    tmp = cache_dir / f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
    tmp.mkdir()
    try:
        header = build(tmp)
        header["checksums"] = {f.name: file_checksum(f) for f in sorted(tmp.glob("*.bin"))}
        (tmp / "header.json").write_text(json.dumps(header, indent=2) + "\n")
        try:
            os.rename(tmp, out)
        except OSError:  # another process published the same dataset first
            if _reusable(out, key) is None:
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return PreparedData.load(out)


def _input_hash(
    corpus: str, tokenizer: str, length: int, val_fraction: float, seed: int, split_documents: str
) -> str:
    inputs = {
        "format_version": FORMAT_VERSION,
        "corpus": corpus_fingerprint(corpus),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "length": length,
        "val_fraction": val_fraction,
        "seed": seed,
        **({"split_documents": split_documents} if split_documents != "none" else {}),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


def _slug(corpus: str, tokenizer: str, length: int) -> str:
    text = f"{Path(corpus).name}-{Path(tokenizer).name}-L{length}"
    return re.sub(r"[^A-Za-z0-9_]+", "-", text).strip("-")[:48]


def _reusable(out: Path, key: str) -> PreparedData | None:
    if not (out / "header.json").is_file():
        return None
    try:
        data = PreparedData.load(out)
    except PartgmError:
        return None
    # a cache written before checksums were stored: rebuilt (it cannot be verified)
    return data if data.header.get("input_hash") == key and "checksums" in data.header else None


def _val_mask(n_docs: int, val_fraction: float, seed: int) -> np.ndarray:
    """A seeded choice of ``max(1, round(val_fraction * n_docs))`` validation documents; a fraction that
    leaves no training document is an error."""
    n_val = max(1, round(val_fraction * n_docs))
    if n_val >= n_docs:
        raise PartgmError(f"data.val_fraction={val_fraction} puts {n_val} of the {n_docs} documents (or images)"
                          " in the validation split and leaves none for training: lower it")
    mask = np.zeros(n_docs, dtype=bool)
    mask[np.random.default_rng(seed).permutation(n_docs)[:n_val]] = True
    return mask


def _build(
    tmp: Path, documents: Callable[[], Iterator[str]], spec: str, length: int, is_val: np.ndarray,
    progress: bool, corpus: str,
) -> dict[str, Any]:
    """Write the tokenizer and both splits of ``documents()`` into ``tmp``; return their part of the header."""
    train_texts = (doc for doc, val in zip(documents(), is_val) if not val)
    tok = load_tokenizer(spec, data_dir=tmp, corpus_texts=train_texts)
    tok.save(tmp)
    dtype = np.dtype(np.uint16 if tok.vocab_size <= 2**16 else np.uint32)
    with ExitStack() as stack:
        writers = {
            split: _RowWriter(stack.enter_context(open(tmp / f"{split}.bin", "wb")), length, tok, dtype)
            for split in SPLITS
        }
        docs = zip(documents(), is_val)
        with tqdm(total=len(is_val), desc="tokenizing", unit="doc", disable=not progress) as bar:
            while batch := list(islice(docs, _BATCH_DOCS)):
                encoded = tok.encode_batch([text for text, _ in batch])
                writers["train"].write([ids for ids, (_, val) in zip(encoded, batch) if not val])
                writers["val"].write([ids for ids, (_, val) in zip(encoded, batch) if val])
                bar.update(len(batch))
    for split, writer in writers.items():
        if writer.rows == 0:
            raise PartgmError(
                f"corpus '{corpus}' is too small for length {length}: its {split} split has {writer.tokens}"
                f" tokens in {writer.documents} document(s), fewer than the {length - 2} one row needs; give more"
                f" text, a shorter data.length, a {'larger' if split == 'val' else 'smaller'} data.val_fraction"
                " or another data.split_documents (docs/data.md)"
            )
    return {
        "tokenizer": spec,
        "vocab_size": tok.vocab_size,
        "bos_id": tok.bos_id,
        "eos_id": tok.eos_id,
        "dtype": dtype.name,
        "length": length,
        "splits": {split: writer.stats() for split, writer in writers.items()},
    }


class _RowWriter:
    """Appends documents (each followed by EOS) to a file as rows ``[BOS] chunk [EOS]``, carrying the
    tokens that do not fill a chunk over to the next call."""

    def __init__(self, file: IO[bytes], length: int, tok: Tokenizer, dtype: np.dtype) -> None:
        self.file, self.length, self.dtype = file, length, dtype
        self.bos, self.eos = tok.bos_id, tok.eos_id
        self.pending = np.zeros(0, dtype=dtype)
        self.rows = self.tokens = self.documents = 0

    def write(self, docs: Sequence[list[int]]) -> None:
        new = np.fromiter(chain.from_iterable(chain(ids, (self.eos,)) for ids in docs), dtype=self.dtype)
        flat = np.concatenate([self.pending, new])
        chunk = self.length - 2
        n_rows = len(flat) // chunk
        rows = np.empty((n_rows, self.length), dtype=self.dtype)
        rows[:, 0], rows[:, -1] = self.bos, self.eos
        rows[:, 1:-1] = flat[: n_rows * chunk].reshape(n_rows, chunk)
        self.file.write(rows.tobytes())
        self.pending = flat[n_rows * chunk :]
        self.rows += n_rows
        self.tokens += len(new)
        self.documents += len(docs)

    def stats(self) -> dict[str, int]:
        """``tokens`` counts document tokens with their EOS, before chunking drops the remainder."""
        return {"rows": self.rows, "tokens": self.tokens, "documents": self.documents}
