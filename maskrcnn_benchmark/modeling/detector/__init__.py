"""Detectors: ``build_detection_model(cfg)`` builds the meta-architecture named by the config."""
from .detectors import build_detection_model

__all__ = ["build_detection_model"]
