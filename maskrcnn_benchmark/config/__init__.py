"""Configuration: ``cfg`` is the global yacs tree of defaults (clone it before merging)."""
from .defaults import _C as cfg

__all__ = ["cfg"]
