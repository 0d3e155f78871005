"""LST's meta weight generator (paper §3.4): generated classifier rows for the new classes of a
phase, and their per-class average that becomes the final classifier."""
from .attention_generator import AttentionBasedGenerator, build_weight_generator
from .novel_weights import NovelWeightAccumulator

__all__ = ["AttentionBasedGenerator", "NovelWeightAccumulator", "build_weight_generator"]
