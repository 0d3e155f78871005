"""The run's seed (the top-level ``SEED`` key, detectron2's convention): drawing one, reading the
one a saved config.yml holds, and seeding Python's ``random``, NumPy and torch with it."""
import os
import random

import numpy as np
import torch
import yaml

# Seeds are drawn below this bound, so that a seed plus a process rank or phase index still fits
# NumPy's 32-bit seeds.
SEED_BOUND = 2 ** 31


def draw_seed():
    """A random seed in [0, SEED_BOUND) from the operating system's entropy."""
    return int.from_bytes(os.urandom(4), "big") % SEED_BOUND


def seed_all_rng(seed):
    """Seed Python's ``random``, NumPy's global generator and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def saved_seed(config_file):
    """The SEED of a saved config.yml (0 or more), or -1 when the file, the key or a resolved
    value is missing."""
    if not os.path.isfile(config_file):
        return -1
    with open(config_file) as f:
        saved = yaml.safe_load(f)
    seed = saved.get("SEED", -1) if isinstance(saved, dict) else -1
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else -1
