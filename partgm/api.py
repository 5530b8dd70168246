"""The Python API: load a trained run or a pretrained directory, generate text, score text, train.

```python
import partgm

model = partgm.load("runs/quickstart")            # a run directory, a pretrained directory or a Hub id
model.generate_text("And God said", steps=64, num_samples=2, seed=0)
model.generate_text(infill={40: "the LORD"}, steps=64)
model.score(["In the beginning God created the heaven and the earth."])   # NLL in nats per text
```

Everything here wraps the library functions the CLI uses (``partgm.run``, ``partgm.evaluation.zeroshot``,
``partgm.engine``), so the API and the commands give the same numbers for the same arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from partgm.errors import PartgmError


class Model:
    """A trained model with its tokenizer, ready to sample and score (eval mode, one device).

    Attributes: ``algorithm`` (the ``Algorithm`` object), ``network`` (the ``nn.Module``), ``tokenizer``,
    ``cfg`` (the run's ``RunConfig``), ``step`` (training step of the weights), ``weights`` (``ema`` | ``raw``),
    ``source`` (the path or Hub id it was loaded from), ``metrics`` (final training metrics after
    ``partgm.train``, else empty)."""

    def __init__(self, run: Any):
        self.run = run  # the LoadedRun (partgm.run.checkpoint) this model wraps
        self.algorithm, self.network, self.tokenizer, self.cfg = run.algorithm, run.model, run.tokenizer, run.cfg
        self.step, self.weights, self.source = run.step, run.weights, run.source
        eos = run.eos_id
        self.eos_id = eos if eos is not None else getattr(run.tokenizer, "eos_id", None)
        self.metrics: dict[str, Any] = {}

    # --- loading -----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, weights: str = "ema", device: str = "cpu", revision: str | None = None) -> Model:
        """A run directory (it has ``checkpoints/``; ``weights`` ema | raw), else a pretrained directory or
        a Hub repository id (``partgm hub export`` / ``push`` output; its weights are what was exported)."""
        from partgm.devices import resolve_device
        from partgm.run.load import load_model

        if not isinstance(path, (str, Path)) or not str(path):
            raise PartgmError(f"partgm.load needs a run directory, a pretrained directory or a Hub id, not {path!r}")
        return cls(load_model(path, weights=weights, device=str(resolve_device(device)), revision=revision))

    from_pretrained = load

    # --- what it is --------------------------------------------------------------------------------------
    @property
    def algo(self) -> str:
        """The algorithm's registered name: ``pgm``, ``mdlm``, ``mdlm-complement``, ``ar``, ..."""
        return self.algorithm.name

    @property
    def length(self) -> int:
        """The trained sequence length L (BOS and EOS included): the longest sequence it samples or scores."""
        return int(self.cfg.data.length)

    @property
    def vocab_size(self) -> int:
        return int(self.algorithm.vocab_size)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.network.parameters())

    def __repr__(self) -> str:
        return (f"partgm.Model(algo={self.algo!r}, length={self.length}, vocab_size={self.vocab_size}, "
                f"parameters={self.num_parameters / 1e6:.1f}M, step={self.step}, weights={self.weights!r}, "
                f"device='{self.device}', source={self.source!r})")

    def _tokenizer(self) -> Any:
        if self.tokenizer is None:
            raise PartgmError(f"'{self.source}' has no tokenizer: use token ids (partgm.samplers.generate)")
        return self.tokenizer

    # --- sampling ----------------------------------------------------------------------------------------
    def generate(
        self,
        prompt: str | None = None,
        *,
        steps: int = 128,
        num_samples: int = 1,
        infill: Mapping[int, str] | None = None,
        nucleus: float = 1.0,
        temperature: float = 1.0,
        sampler: str = "auto",
        seed: int = 0,
        batch: int | None = None,
        length: int | None = None,
        at_eos: str = "keep",
    ) -> list[dict[str, Any]]:
        """Samples as records {"index", "text", "token_ids"} (``text`` without BOS).

        ``prompt`` fixes a prefix after BOS; ``infill`` {position: text} fixes each text's tokens from its
        position on (PGM and MDLM). ``length`` (default: the trained length) longer than the trained
        context is refused. ``batch`` samples per forward pass (default: all of them). ``at_eos``: the text
        after an end-of-text token is kept (``keep``), cut (``stop``) or the tokens dropped (``strip``)."""
        from partgm.run.sampling import Draws, place_texts, sample_texts
        from partgm.samplers import SamplingOptions

        tok = self._tokenizer()
        if prompt is not None and not isinstance(prompt, str):
            raise PartgmError(f"prompt must be a string or None, not {type(prompt).__name__} {prompt!r}")
        infill = _check_infill(infill)
        options = SamplingOptions(steps=steps, nucleus=nucleus, temperature=temperature)
        draws = Draws(options, sampler, num_samples, num_samples if batch is None else batch, seed)
        return sample_texts(self.run, draws, prompt, place_texts(infill, tok), length=length, at_eos=at_eos)

    def generate_text(self, prompt: str | None = None, **kwargs: Any) -> list[str]:
        """The texts of ``generate`` (same arguments): one string per sample, without BOS."""
        return [r["text"] for r in self.generate(prompt, **kwargs)]

    # --- scoring -----------------------------------------------------------------------------------------
    def score_pairs(
        self,
        pairs: Sequence[tuple[str, str]],
        *,
        mc_samples: int = 32,
        seed: int = 0,
        batch: int = 8,
        truncate: bool = False,
    ) -> list[tuple[float, bool]]:
        """For each (context, continuation): (NLL of the continuation given ``[BOS] + context`` in nats,
        whether every continuation token is the argmax when all of them are predicted at once).

        AR: the exact NLL (teacher forcing). MDLM / PGM: the Monte-Carlo NELBO over ``mc_samples`` draws of
        (t, mask) restricted to the continuation (an upper bound), with draws shared by all pairs (seeded by
        ``seed``). Tokenisation and padding are those of ``partgm eval lambada / choice``; a sequence longer
        than ``length`` is an error, or with ``truncate`` loses context tokens from the left."""
        from partgm.evaluation.zeroshot import encode_pair

        tok = self._tokenizer()
        encoded = [encode_pair(tok, context, continuation) for context, continuation in pairs]
        return self.score_token_pairs(encoded, mc_samples=mc_samples, seed=seed, batch=batch, truncate=truncate)

    def score_token_pairs(
        self,
        pairs: Sequence[tuple[list[int], list[int]]],
        *,
        mc_samples: int = 32,
        seed: int = 0,
        batch: int = 8,
        truncate: bool = False,
    ) -> list[tuple[float, bool]]:
        """``score_pairs`` on token ids (context ids, continuation ids); BOS is added in front."""
        from partgm.evaluation.zeroshot import Scorer, build_batch

        if batch < 1:
            raise PartgmError("batch must be positive")
        scorer = Scorer(self.algorithm, self.network, self.device)
        out: list[tuple[float, bool]] = []
        for start in range(0, len(pairs), batch):
            chunk = list(pairs[start : start + batch])
            b = build_batch(chunk, range(start + 1, start + 1 + len(chunk)), self.length, self.algorithm.bos_id,
                            self._pad_id(), scorer.pads_to_length, truncate)
            nll = scorer.nll(b.x, b.target, mc_samples, seed)
            _, greedy = scorer.argmax(b.x, b.target)
            out += [(float(n), bool(g)) for n, g in zip(nll.tolist(), greedy.tolist())]
        return out

    def score(self, texts: str | Sequence[str], *, mc_samples: int = 32, seed: int = 0, batch: int = 8) -> list[float]:
        """NLL in nats of each text's tokens given BOS: exact for AR, a Monte-Carlo NELBO (upper bound) for
        MDLM / PGM (see ``score_pairs``). Texts must fit the trained length with BOS."""
        texts = [texts] if isinstance(texts, str) else list(texts) if isinstance(texts, Sequence) else [texts]
        bad = next((t for t in texts if not isinstance(t, str)), None)
        if bad is not None or not texts:
            raise PartgmError(f"score needs a text or a list of texts, not {bad!r}" if texts else "score needs texts")
        return [n for n, _ in self.score_pairs([("", t) for t in texts], mc_samples=mc_samples, seed=seed,
                                               batch=batch)]

    def _pad_id(self) -> int:
        if self.eos_id is None:
            raise PartgmError(f"'{self.source}' records no EOS id to pad with")
        return int(self.eos_id)


def _check_infill(infill: Mapping[int, str] | None) -> dict[int, str]:
    """``infill`` as {position: text}, positions non-negative ints and texts strings (else PartgmError)."""
    if infill is None:
        return {}
    if not isinstance(infill, Mapping):
        raise PartgmError(f"infill must be a dict {{position: text}}, not {type(infill).__name__}")
    for pos, text in infill.items():
        if isinstance(pos, bool) or not isinstance(pos, int) or pos < 0 or not isinstance(text, str):
            raise PartgmError(f"infill {{{pos!r}: {text!r}}}: positions are integers >= 0 and texts strings, "
                              "e.g. infill={40: 'the LORD'}")
    return dict(infill)


def load(path: str | Path, *, weights: str = "ema", device: str = "cpu", revision: str | None = None) -> Model:
    """``Model.load``: a run directory, a pretrained directory or a Hub repository id."""
    return Model.load(path, weights=weights, device=device, revision=revision)


def train(
    config: str | Path | Mapping[str, Any] | None = None,
    *,
    run_dir: str | Path,
    resume: bool = False,
    overrides: Sequence[str] = (),
    **options: Any,
) -> Model:
    """Train like ``partgm train`` and return the trained run as a ``Model`` (EMA weights; its ``metrics``
    hold the final training metrics).

    ``config``: a YAML/JSON file, a dict of config sections, or None (defaults). ``options`` are dotted
    overrides with ``__`` for the dot (``train__steps=200``, ``algo="mdlm"``, ``preset="cpu-tiny"``);
    ``overrides`` the same as ``section.key=value`` strings."""
    from partgm.engine import train as train_run
    from partgm.resolve import resolve_config
    from partgm.run.layout import check_fresh_or_resume
    from partgm.runs import prepare_data

    items = [f"{k.replace('__', '.')}={_override_value(v)}" for k, v in options.items()] + list(overrides)
    file, base = (None, dict(config)) if isinstance(config, Mapping) else (config, None)
    cfg = resolve_config(file, items, base)
    run_dir = Path(run_dir)
    check_fresh_or_resume(run_dir, resume, flag="resume=True")
    metrics = train_run(*prepare_data(cfg, progress=cfg.train.progress), run_dir, resume=resume)
    model = Model.load(run_dir, device=cfg.train.device)
    model.metrics = metrics
    return model


def _override_value(value: Any) -> str:
    """A Python value as the text of a dotted override (YAML rules: lists and booleans survive)."""
    import json

    return value if isinstance(value, str) else json.dumps(list(value) if isinstance(value, tuple) else value)


def evaluate_ppl(
    path: str | Path,
    *,
    split: str = "val",
    data: str | Path | None = None,
    batch: int = 16,
    max_batches: int = 0,
    seed: int = 0,
    weights: str = "ema",
    device: str = "cpu",
    draws: int = 1,
) -> dict[str, Any]:
    """Perplexity of a run directory over a split of its prepared data (or ``data``), as ``partgm eval
    ppl`` computes it, with ``draws`` times and masks per sequence: ``{"run_dir", "algo", "split",
    "weights", "step", "data", "seed", "ppl", "nelbo", "tokens", "stderr", "ppl_low", "ppl_high", ...}``
    (``ppl`` is a bound for MDLM / PGM with a 95% interval, exact for AR)."""
    from partgm.devices import resolve_device
    from partgm.engine import evaluate_ppl as ppl
    from partgm.evaluation.ppl import load_scoring

    device = str(resolve_device(device))
    run, prepared, rows, labels = load_scoring(path, split, data, weights, device)
    result = ppl(run.algorithm, run.model, rows, batch, device, seed, max_batches, val_labels=labels, draws=draws)
    return {"run_dir": str(path), "algo": run.cfg.algo, "split": split, "weights": weights, "step": run.step,
            "data": str(prepared.path), "seed": seed, **result}
