"""Evaluation: generative perplexity with entropy, zero-shot scoring (LAMBADA, multiple choice), plots.

See docs/evaluation.md for the protocols. Submodules: ``genppl``, ``zeroshot``, ``plots``, ``commands``.
"""
