"""The compact bundled trainer: vision encoder → MLP projector → LLaMA with LoRA, on a medmix mixture.

Entry points: `medmix train` (trainer.cli.train_command), `python -m trainer ...` and
`torchrun --nproc_per_node N -m trainer.train ...`. Evaluation reads checkpoints through
`trainer.checkpoint.load_vision_encoder` and `trainer.model.load_vlm`.
"""
