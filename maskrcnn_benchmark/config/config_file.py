"""Merging a YAML config file into the config tree, with detectron2-style ``_BASE_`` files.

A YAML file may start with ``_BASE_: other.yaml`` (a path relative to the file, or a list of
them): the base files are merged first, in order, then the file's own keys, so a variant
config states only what it changes (e.g. the LST rows of Table 1 over the plain baseline).
Everything else is yacs's ``merge_from_file``: unknown and renamed keys fail the same way.
"""
import os

import yaml
from yacs.config import CfgNode

BASE_KEY = "_BASE_"


def _read_yaml(path):
    with open(path, "r") as f:
        try:
            content = yaml.safe_load(f)
        except yaml.MarkedYAMLError as error:
            mark = error.problem_mark or error.context_mark
            raise ValueError("{}, line {}, column {}: YAML syntax error: {}{}".format(
                path, mark.line + 1, mark.column + 1, error.problem or error.context,
                " ({})".format(error.context) if error.context and error.problem else ""
            )) from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ValueError("{}: a config file must be a YAML mapping of keys, got {}".format(
            path, type(content).__name__))
    return content


def merge_config_file(cfg, path, _chain=()):
    """Merge the YAML file at ``path`` (and its ``_BASE_`` files, first) into ``cfg`` in place.

    Raises FileNotFoundError for a missing file or base, ValueError for a cycle of bases.
    """
    path = os.path.abspath(path)
    if path in _chain:
        raise ValueError("{}: circular {} chain: {}".format(
            path, BASE_KEY, " -> ".join(_chain + (path,))))
    if not os.path.isfile(path):
        where = " (the {} of {})".format(BASE_KEY, _chain[-1]) if _chain else ""
        raise FileNotFoundError("config file {}{} does not exist".format(path, where))
    content = _read_yaml(path)
    bases = content.pop(BASE_KEY, [])
    for base in [bases] if isinstance(bases, str) else bases:
        merge_config_file(cfg, os.path.join(os.path.dirname(path), base), _chain + (path,))
    cfg.merge_from_other_cfg(CfgNode(content))
