"""Models trained by gradsync. Any ``nn.Module`` whose ``forward(x, y)`` returns a scalar loss works."""

from gradsync.model.gpt import GPT, PRESETS, GPTShape, build_gpt, gpt_from_config

__all__ = ["GPT", "GPTShape", "PRESETS", "build_gpt", "gpt_from_config"]
