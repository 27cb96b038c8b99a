"""gradsync: data-parallel training of language models on PyTorch and torch.distributed."""

__version__ = "0.1.0"
