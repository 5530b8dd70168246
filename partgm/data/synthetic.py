"""Synthetic corpora drawn from a known HMM process (``partgm.data.hmm``), prepared like any other data.

``data.corpus=hmm:states=S,vocab=V,concentration=A,seed=K,docs=D`` (text: each row is ``[BOS]`` and
``data.length - 1`` HMM tokens; ids 0..V-1 are the HMM's, id V is BOS / EOS, so the vocabulary is V + 1)
and ``hmm-image:classes=C,...`` (class-conditional token grids: one HMM per class over the raster order
of a ``sqrt(L) x sqrt(L)`` grid, no BOS, labels 0..C-1). Every parameter is optional. The data depend on
the spec only (not on ``train.seed``); the last ``val_fraction`` of the D documents is the validation
split. The process is saved beside the data as ``process.npz`` (``HMMProcess.load``), and the header
carries the validation draws' true NLL per token (the process's entropy per token at this length).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import torch

from partgm.data.hmm import HMMProcess
from partgm.errors import PartgmError

PREFIXES = ("hmm:", "hmm-image:")
PROCESS_FILE = "process.npz"
_DEFAULTS = {"states": 64, "vocab": 128, "concentration": 0.05, "emission": 0.02, "seed": 0, "docs": 10000,
             "classes": 1}
_CHUNK = 8192
SYNTHETIC_VERSION = 1


def is_synthetic(corpus: str) -> bool:
    return corpus in ("hmm", "hmm-image") or corpus.startswith(PREFIXES)


def parse_spec(corpus: str) -> tuple[str, dict]:
    """``hmm:k=v,...`` -> (kind ``hmm`` | ``hmm-image``, parameters with defaults)."""
    kind, _, rest = corpus.partition(":")
    params = dict(_DEFAULTS, classes=10 if kind == "hmm-image" else 1)
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or key not in params:
            raise PartgmError(f"corpus '{corpus}': '{item}' must be one of {', '.join(f'{k}=...' for k in params)}")
        try:
            params[key] = type(_DEFAULTS[key])(float(value))
        except ValueError:
            raise PartgmError(f"corpus '{corpus}': {key}={value!r} is not a number") from None
    if not 2 <= params["vocab"] < 2**16 - 1:
        raise PartgmError(f"corpus '{corpus}': vocab={params['vocab']} must be in 2..65534 (ids are stored as uint16)")
    if kind == "hmm" and params["classes"] != 1:
        raise PartgmError(f"corpus '{corpus}': classes is for hmm-image (text is unconditional)")
    return kind, params


def process_of(corpus: str) -> HMMProcess:
    """The process a synthetic corpus spec names (deterministic from its seed)."""
    _, p = parse_spec(corpus)
    return HMMProcess.random(p["states"], p["vocab"], p["concentration"], p["seed"], p["classes"], p["emission"])


def layout(corpus: str, length: int) -> dict:
    """How rows hold the process: {"bos_id", "offset" (HMM positions start here), "grid", "vocab_size"}."""
    kind, p = parse_spec(corpus)
    if kind == "hmm":
        if length < 2:
            raise PartgmError(f"data.length={length} is too short for '{corpus}' (BOS and at least one token)")
        return {"bos_id": p["vocab"], "offset": 1, "grid": None, "vocab_size": p["vocab"] + 1}
    side = math.isqrt(length)
    if side * side != length:
        raise PartgmError(f"data.length={length} must be a square for '{corpus}' (e.g. 64 = an 8x8 grid)")
    return {"bos_id": None, "offset": 0, "grid": [side, side], "vocab_size": p["vocab"]}


def draw_rows(process: HMMProcess, corpus: str, length: int, n: int, generator: torch.Generator,
              labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows [n, length] long in the data's layout, labels [n]) of fresh exact draws."""
    lay = layout(corpus, length)
    tokens, drawn = process.sample(n, length - lay["offset"], generator, labels)
    if lay["offset"]:
        tokens = torch.cat([torch.full((n, 1), lay["bos_id"], dtype=torch.long), tokens], dim=1)
    return tokens, drawn


def _word_tokenizer(vocab: int):
    """The identity tokenizer over the HMM ids: id i is the word ``t{i}``, id V is <|endoftext|>."""
    import tokenizers
    from tokenizers import models, pre_tokenizers

    from partgm.data.tokenizers import EOT, Tokenizer

    words = {f"t{i}": i for i in range(vocab)} | {EOT: vocab}
    hf = tokenizers.Tokenizer(models.WordLevel(words, unk_token=EOT))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf.add_special_tokens([EOT])
    return Tokenizer(hf, "hmm")


def prepare_synthetic(corpus: str, length: int, val_fraction: float, cache_dir: str | Path,
                      publish, reusable, format_version: int):
    """Draw the documents of ``corpus`` into ``cache_dir/<slug>-<hash12>`` (or reuse it): ``train.bin`` /
    ``val.bin`` (uint16 [rows, length]), labels for ``hmm-image``, ``process.npz`` and ``header.json``.
    ``publish`` / ``reusable`` / ``format_version``: ``partgm.data.prepare``'s (passed in: no import cycle)."""
    kind, p = parse_spec(corpus)
    lay = layout(corpus, length)
    if not 0.0 < val_fraction < 1.0:
        raise PartgmError(f"val_fraction={val_fraction} must be in (0, 1)")
    n_val = min(max(1, round(val_fraction * p["docs"])), p["docs"] - 1)
    if p["docs"] < 2:
        raise PartgmError(f"corpus '{corpus}': docs={p['docs']}; a train/validation split needs at least 2")
    inputs = {"format_version": format_version, "synthetic": SYNTHETIC_VERSION, "kind": kind, **p,
              "length": length, "n_val": n_val}
    key = hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()
    cache_dir = Path(cache_dir)
    out = cache_dir / f"{kind}-S{p['states']}-V{p['vocab']}-L{length}-{key[:12]}"
    existing = reusable(out, key)
    if existing is not None:
        return existing
    process = process_of(corpus)
    generator = torch.Generator().manual_seed(p["seed"] + 1)  # the documents' stream, not the matrices'
    chunks = []
    for i in range(0, p["docs"], _CHUNK):  # uint16 as soon as drawn: a quarter of the memory
        rows, drawn = draw_rows(process, corpus, length, min(_CHUNK, p["docs"] - i), generator)
        chunks.append((rows.numpy().astype(np.uint16), drawn.numpy()))
    tokens = np.concatenate([c[0] for c in chunks])
    labels = np.concatenate([c[1] for c in chunks]).astype(np.int64)
    val_nll = -process.log_prob(torch.from_numpy(tokens[-n_val:, lay["offset"]:].astype(np.int64)),
                                torch.from_numpy(labels[-n_val:]) if kind == "hmm-image" else None)
    per_token = (val_nll / (length - lay["offset"])).numpy()

    def build(tmp: Path) -> dict:
        splits = {}
        for split, rows in (("train", slice(0, -n_val)), ("val", slice(-n_val, None))):
            (tmp / f"{split}.bin").write_bytes(np.ascontiguousarray(tokens[rows]).tobytes())
            if kind == "hmm-image":
                (tmp / f"{split}.labels.bin").write_bytes(labels[rows].tobytes())
            n = len(tokens[rows])
            splits[split] = {"rows": n, "tokens": n * length, "documents": n}
        process.save(tmp / PROCESS_FILE)
        if kind == "hmm":
            _word_tokenizer(p["vocab"]).save(tmp)
        extra = ({"grid": lay["grid"], "num_classes": p["classes"], "class_names": [str(c) for c in range(p["classes"])],
                  } if kind == "hmm-image" else {})
        return {"format_version": format_version, "input_hash": key, "corpus": corpus, "tokenizer": "hmm" if
                kind == "hmm" else None, "vocab_size": lay["vocab_size"], "bos_id": lay["bos_id"],
                "eos_id": lay["bos_id"], "dtype": "uint16", "length": length, "splits": splits, **extra,
                "val_fraction": val_fraction, "process": {**process.summary(), "file": PROCESS_FILE},
                "true_nll_per_token": {"mean": float(per_token.mean()), "ci95": _ci95(per_token),
                                       "draws": int(n_val), "positions": length - lay["offset"]}}

    return publish(cache_dir, out, key, build)


def _ci95(values: np.ndarray) -> float:
    """Half-width of the normal 95% interval of the mean."""
    return float(1.96 * values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else float("nan")
