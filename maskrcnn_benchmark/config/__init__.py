"""Configuration: ``cfg`` is the global yacs tree of defaults (clone it before merging)."""
from .config_file import merge_config_file
from .defaults import _C as cfg

__all__ = ["cfg", "merge_config_file"]
