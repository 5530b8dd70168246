"""Train a model with the Python API, sample from it with a prompt, and score texts.

    python examples/train_sample_score.py                     # cpu-small PGM on the bundled KJV
    python examples/train_sample_score.py --algo mdlm --run-dir runs/example-mdlm
    python examples/train_sample_score.py --corpus my_texts/ --tokenizer bpe-1000 --steps 50

The defaults are the quickstart recipe (partgm/configs/quickstart.yaml), so this takes as long as
`partgm quickstart` on the same machine; CI runs it on a tiny corpus with tiny settings.
"""

from __future__ import annotations

import argparse

import partgm
from partgm.quickstart import QUICKSTART_CONFIG


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default="runs/example-pgm")
    p.add_argument("--algo", default="pgm", help="pgm | mdlm | mdlm-complement | ar")
    p.add_argument("--preset", default="cpu-small")
    p.add_argument("--corpus", default="kjv", help="kjv, a .txt / .jsonl file or a directory of them")
    p.add_argument("--tokenizer", default="bpe-4096")
    p.add_argument("--length", type=int, default=128)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=32, help="sequences per optimizer step")
    p.add_argument("--sample-steps", type=int, default=64)
    args = p.parse_args(argv)

    # 1. Train. Keyword arguments are config overrides, "__" standing for "." (train__steps = train.steps).
    model = partgm.train(
        QUICKSTART_CONFIG,
        run_dir=args.run_dir,
        algo=args.algo,
        preset=args.preset,
        data__corpus=args.corpus,
        data__tokenizer=args.tokenizer,
        data__length=args.length,
        train__steps=args.steps,
        train__global_batch=args.batch,
        train__warmup_steps=min(50, args.steps),
        train__eval_every=args.steps,
        train__save_every=args.steps,
    )
    print(model)
    print(f"final validation PPL: {model.metrics['val_ppl']:.2f}")

    # 2. Sample: a prompt, a number of steps, nucleus sampling and a seed (same seed, same texts).
    for i, text in enumerate(model.generate_text("And God said", steps=args.sample_steps, num_samples=2,
                                                 nucleus=0.9, seed=0)):
        print(f"--- sample {i} ---\n{text}")

    # 3. Score: the negative log-likelihood of each text in nats (exact for AR, an upper bound for
    #    MDLM / PGM, averaged over Monte-Carlo draws). Lower is more likely.
    #    Each text must fit the trained length (model.length tokens with BOS).
    texts = ["And God said, Let there be light", "light be there Let said, God And"]
    for text, nll in zip(texts, model.score(texts, mc_samples=16)):
        print(f"{nll:8.1f} nats  {text}")

    # 4. Perplexity over the validation split, as `partgm eval ppl` computes it.
    print(partgm.evaluate_ppl(args.run_dir, max_batches=4))


if __name__ == "__main__":
    main()
