"""EleutherAI lm-evaluation-harness adapter: the model ``partgm`` for PGM, MDLM and AR runs.

Importing this module registers the model with lm-eval (``pip install 'partgm[lm-eval]'``). lm-eval
0.4.x finds models only in its own table or among modules already imported, so run the harness as
``partgm lm-eval ...`` (lm-eval's own command line, with this model registered), or from Python::

    import lm_eval
    import partgm.integrations.lm_eval  # noqa: F401  (registers "partgm")
    lm_eval.simple_evaluate(model="partgm", model_args="run=runs/kjv-pgm,mc_samples=32", tasks=[...])

``--model_args`` (all optional but ``run``): ``run`` (a run directory, a pretrained directory or a Hub
id), ``weights`` (ema | raw), ``mc_samples`` (Monte-Carlo draws per likelihood for MDLM / PGM; AR is
exact), ``seed``, ``steps`` / ``nucleus`` / ``temperature`` / ``sampler`` (``generate_until``),
``truncate`` (drop context tokens from the left when too long; default true, as lm-eval's HF model
does), ``device``; ``--batch_size`` sets the scoring batch.

- ``loglikelihood``: (log p(continuation | context), is_greedy) from ``partgm.Model.score_token_pairs``:
  the Monte-Carlo NELBO of the continuation given the context (a lower bound on log p) for MDLM / PGM,
  the exact value for AR; ``is_greedy`` is the one-pass argmax test of ``partgm eval lambada``.
- ``loglikelihood_rolling``: the same scores over lm-eval's rolling windows of the text (each window
  ``[BOS] + context + tokens`` fits the trained length).
- ``generate_until``: one sample of the trained length with the context as prompt, cut at the first
  stop string or EOS and at ``max_gen_toks`` tokens.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import torch

try:
    import lm_eval.models  # noqa: F401  (fills lm-eval's own table first: its lookup imports it only if empty)
    from lm_eval.api.model import LM
    from lm_eval.api.registry import register_model
    from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(f"the lm-eval adapter needs lm-eval: pip install 'partgm[lm-eval]' ({exc})") from None

from partgm.api import Model
from partgm.errors import PartgmError
from partgm.integrations import model_arg_bool
from partgm.samplers import SamplingOptions


def _batch_size(value: Any) -> int:
    """lm-eval's ``--batch_size``: a number (``auto`` and ``auto:N`` fall back to 8)."""
    text = str(value)
    return int(text) if text.isdigit() and int(text) > 0 else 8


@register_model("partgm")
class PartgmLM(LM):
    """lm-eval's ``LM`` over a ``partgm.Model`` (module docstring: arguments and estimators)."""

    def __init__(
        self,
        run: str,
        weights: str = "ema",
        mc_samples: int = 32,
        seed: int = 0,
        steps: int = 128,
        nucleus: float = 1.0,
        temperature: float = 1.0,
        sampler: str = "auto",
        truncate: bool | str = True,
        device: str = "cpu",
        batch_size: int | str = 8,
        max_batch_size: int | None = None,
    ):
        super().__init__()
        if str(device or "cpu").startswith("cuda") and not torch.cuda.is_available():
            logging.getLogger(__name__).warning("CUDA is not available: partgm runs on the CPU")
            device = "cpu"
        self.model = Model.load(run, weights=weights, device=device or "cpu")
        self.mc_samples, self.seed, self.sampler = int(mc_samples), int(seed), sampler
        self.options = SamplingOptions(steps=int(steps), nucleus=float(nucleus), temperature=float(temperature))
        self.truncate, self.batch = model_arg_bool("truncate", truncate), _batch_size(batch_size)
        self.tokenizer = self.model._tokenizer()

    @property
    def tokenizer_name(self) -> str:
        return str(self.tokenizer.name)

    def _score(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        return self.model.score_token_pairs(pairs, mc_samples=self.mc_samples, seed=self.seed, batch=self.batch,
                                            truncate=self.truncate)

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        from partgm.evaluation.zeroshot import encode_pair

        pairs = [encode_pair(self.tokenizer, *r.args) for r in requests]
        return [(-nll, greedy) for nll, greedy in self._score(pairs)]

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        # Windows of at most L - 2 tokens: BOS and one token of context come first in every row.
        if self.model.algorithm.bos_id is None:
            raise PartgmError("rolling log-likelihoods need a model with a BOS token")
        out = []
        for r in requests:
            (text,) = r.args
            windows = [make_disjoint_window(w) for w in get_rolling_token_windows(
                self.tokenizer.encode(text), prefix_token=-1, max_seq_len=self.model.length - 2, context_len=1)]
            pairs = [(ctx[1:] if i == 0 else ctx, cont) for i, (ctx, cont) in enumerate(windows)]  # -1: BOS
            out.append(-sum(nll for nll, _ in self._score(pairs)))
        return out

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        from partgm.run.sampling import Draws, sample_texts

        out = []
        for r in requests:
            context, kwargs = r.args
            kwargs = dict(kwargs or {})
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            room = int(kwargs.get("max_gen_toks", 256))
            ids = self.tokenizer.encode(context) if context else []
            keep = max(self.model.length - 1 - min(room, self.model.length - 2), 0)
            ids = ids[len(ids) - keep :] if len(ids) > keep else ids  # lm-eval's left truncation
            draws = Draws(self.options, self.sampler, num_samples=1, batch=1, seed=self.seed)
            (record,) = sample_texts(self.model.run, draws, fixed={1 + i: t for i, t in enumerate(ids)})
            generated = record["token_ids"][1 + len(ids) :][:room]
            eos = self.model.eos_id
            if eos in generated:
                generated = generated[: generated.index(eos)]
            text = self.tokenizer.decode(generated)
            for stop in until:
                text = text.split(stop)[0] if stop else text
            out.append(text)
        return out


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line with the ``partgm`` model registered (``partgm lm-eval ARGS``). Without the
    Hub (``partgm.integrations.offline``) a task data set missing from the cache fails at once, clearly."""
    from lm_eval.__main__ import cli_evaluate

    from partgm.integrations.offline import go_offline_if_unreachable, offline_error

    args = list(sys.argv[1:] if argv is None else argv)
    offline = None if any(a in ("-h", "--help") for a in args) else go_offline_if_unreachable()
    sys.argv = ["lm_eval", *args]
    try:
        cli_evaluate()
    except Exception as exc:
        error = offline_error(exc, offline) if offline else None
        if error is None:
            raise
        raise error from None


if __name__ == "__main__":
    main()
