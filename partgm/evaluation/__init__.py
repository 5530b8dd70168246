"""Evaluation: generative perplexity with entropy, zero-shot scoring."""
