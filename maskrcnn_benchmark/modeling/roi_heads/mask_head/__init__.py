"""Mask head: RoI mask feature extractors, mask predictors, mask loss and mask pasting."""
