"""Box head: RoI feature extractors, class/box predictors, Fast R-CNN loss and post-processing."""
