"""RoI heads: the box head (Fast R-CNN) and the mask head, combined by
``roi_heads.build_roi_heads``."""
