"""Downstream evaluation: medical VQA on held-out test splits, and frozen-encoder classification.

Kept import-light on purpose (no torch, sklearn or transformers here): benchmark adapters under
`medmix.sources` import `medmix.evaluation.benchmarks`, and the source registry must stay fast.
"""
