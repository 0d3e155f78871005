"""Helpers shared by the training-engine, CLI and distributed tests: the tiny CPU config on the LVIS
test fixture, a seeding environment module, and running the tools/ scripts in subprocesses."""
import os
import subprocess
import sys

import torch

from fixtures_data import write_lvis_fixture, write_paths_catalog
from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.utils.model_serialization import strip_prefix_if_present

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO_ROOT, "configs", "tests", "e2e_mask_rcnn_R_18_FPN_tiny_cpu.yaml")

# A TORCH_DETECTRON_ENV_MODULE (upstream's custom-environment hook) that seeds every generator,
# so that two runs of a tool start from the same initial weights and random state.
SEED_ENV_MODULE = '''import random

import numpy as np
import torch


def setup_environment():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
'''


def write_fixture_catalog(directory, **lvis_fixture_kwargs):
    """Write the LVIS v1 fixture and a PATHS_CATALOG naming it "fixture_train" and "fixture_test"
    (the DATASETS of the tiny config). Returns (catalog path, DatasetFixture)."""
    fixture = write_lvis_fixture(str(directory), **lvis_fixture_kwargs)
    catalog = write_paths_catalog(
        os.path.join(str(directory), "fixture_catalog.py"),
        {"fixture_train": ("LVISDataset", fixture), "fixture_test": ("LVISDataset", fixture)},
    )
    return catalog, fixture


def write_seed_env_module(directory):
    path = os.path.join(str(directory), "seed_env.py")
    with open(path, "w") as f:
        f.write(SEED_ENV_MODULE)
    return path


def tiny_cfg(catalog, output_dir, *opts):
    """A clone of the defaults merged with the tiny config, the catalog, OUTPUT_DIR and ``opts``."""
    cfg = default_cfg.clone()
    cfg.merge_from_file(TINY_CONFIG)
    cfg.merge_from_list(["PATHS_CATALOG", str(catalog), "OUTPUT_DIR", str(output_dir), *opts])
    return cfg


def tool_env(seed_env_module=None, threads=None):
    """Environment of a tool subprocess: the repository importable, optionally seeded/thread-limited."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [REPO_ROOT, env.get("PYTHONPATH")]))
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    if seed_env_module:
        env["TORCH_DETECTRON_ENV_MODULE"] = str(seed_env_module)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def run_tool(script, args, env, nproc=None, timeout=300):
    """Run tools/<script> with ``args`` (through torch.distributed.run with ``nproc`` processes
    when given); returns the CompletedProcess (stdout and stderr as text)."""
    command = [sys.executable]
    if nproc:
        command += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    command += [os.path.join(REPO_ROOT, "tools", script), *map(str, args)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


def check_ran(result):
    """Assert a tool exited with 0, showing its output otherwise."""
    assert result.returncode == 0, (
        f"exit code {result.returncode}\nstdout:\n{result.stdout[-5000:]}\nstderr:\n{result.stderr[-5000:]}"
    )


def load_checkpoint(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def max_weight_difference(state_a, state_b):
    """Largest absolute difference between two state dicts with the same keys (a DistributedDataParallel
    run saves them with a "module." prefix)."""
    state_a, state_b = strip_prefix_if_present(state_a, "module."), strip_prefix_if_present(state_b, "module.")
    assert state_a.keys() == state_b.keys()
    return max((state_a[k].double() - state_b[k].double()).abs().max().item() for k in state_a if state_a[k].numel())
