"""maskrcnn-benchmark on modern PyTorch, with Learning to Segment the Tail (LST)."""
