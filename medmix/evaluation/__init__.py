"""Downstream evaluation: medical VQA on held-out test splits, and frozen-encoder classification.

Evaluation reads sources; sources never import evaluation (the benchmark adapters and their
native-layout readers live in `medmix.sources`, a test holds the line). Kept import-light
(no torch, sklearn or transformers here) so `medmix eval --help` stays fast.
"""
