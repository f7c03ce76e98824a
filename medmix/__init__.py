"""medmix: reproducible medical vision-language pretraining mixtures."""

__version__ = "0.1.0"
