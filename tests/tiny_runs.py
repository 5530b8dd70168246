"""Tiny run directories with a word-level tokenizer, shared by the evaluation, CLI and bench tests."""

from __future__ import annotations

from pathlib import Path

import tokenizers
import torch

from partgm.algorithms import get_algorithm
from partgm.data import Tokenizer, load_tokenizer
from partgm.resolve import resolve_config
from partgm.run.pretrained import write_run_directory

TASKS = Path(__file__).parent / "fixtures" / "tasks"
WORDS = [
    "in",
    "the",
    "beginning",
    "god",
    "created",
    "heaven",
    "and",
    "earth",
    "light",
    "was",
    "good",
    "lord",
    "said",
    "let",
    "there",
    "be",
    "water",
    "day",
    "night",
    "bread",
]
ALGOS = ("mdlm", "pgm", "ar")


def word_tokenizer(directory: Path, words: list[str] = WORDS) -> Tokenizer:
    """Ids: <|endoftext|> 0 (BOS = EOS), [UNK] 1, then the words from 2."""
    vocab = {"<|endoftext|>": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    hf = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    hf.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    hf.add_special_tokens(["<|endoftext|>"])
    directory.mkdir(parents=True, exist_ok=True)
    hf.save(str(directory / "tokenizer.json"))
    return load_tokenizer(str(directory / "tokenizer.json"))


def make_run(
    run_dir: Path,
    algo: str,
    tok: Tokenizer,
    length: int = 16,
    seed: int = 0,
    bias: torch.Tensor | None = None,
) -> tuple[object, torch.nn.Module]:
    """A run directory with random weights (every parameter, so no block is an identity); with
    ``bias`` the output weight is zeroed and the logits are ``bias`` everywhere."""
    cfg = resolve_config(
        overrides=[
            f"algo={algo}",
            "preset=cpu-tiny",
            f"data.length={length}",
            "model.hidden_size=32",
            "model.cond_dim=16",
        ]
    )
    algorithm = get_algorithm(algo, tok.vocab_size, tok.bos_id)
    torch.manual_seed(seed)
    model = algorithm.build_model(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.3)
        if bias is not None:
            model.output_layer.linear.weight.zero_()
            model.output_layer.linear.bias.copy_(bias)
    state = model.state_dict()
    write_run_directory(run_dir, cfg, tok.vocab_size, tok.bos_id, tok.eos_id, state, state, tok, step=7)
    return algorithm, model.eval()


def out_bias(algo: str, tok: Tokenizer, favourite: dict[str, float]) -> torch.Tensor:
    n_out = tok.vocab_size + (1 if algo == "mdlm" else 0)
    b = torch.zeros(n_out)
    for word, value in favourite.items():
        b[tok.encode(word)[0]] = value
    return b
