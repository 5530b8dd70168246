"""Adapters to other tools, each an optional extra: ``lm_eval`` (EleutherAI lm-evaluation-harness)."""
