"""Shared data structures: BoxList, boxlist_ops, ImageList, SegmentationMask."""
