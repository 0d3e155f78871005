"""Helpers shared by the training-engine, CLI and distributed tests: the tiny CPU config on the LVIS
test fixture, a seeding environment module, and running the tools/ scripts in subprocesses."""
import importlib.util
import os
import random
import subprocess
import sys

import numpy as np
import torch

from fixtures_data import write_lvis_fixture, write_paths_catalog
from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.utils.model_serialization import strip_prefix_if_present

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO_ROOT, "configs", "tests", "e2e_mask_rcnn_R_18_FPN_tiny_cpu.yaml")
# The tiny model as an LST experiment: the 6 fixture categories as C_0 of 4 and one phase of 2.
TEST_LST_CONFIGS = os.path.join(REPO_ROOT, "configs", "tests", "lst")

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


def seed_everything(seed=0):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train_net_module():
    """tools/train_net.py imported as a module (its ``train`` runs in the test process)."""
    spec = importlib.util.spec_from_file_location("train_net_under_test", os.path.join(REPO_ROOT, "tools", "train_net.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_random_phase1_experiment(directory, base=4, num_classes=7):
    """An LST experiment on a 32-image LVIS fixture (seed 1: base classes = categories 1-4, new =
    5 (2 images) and 6 (1 image)): phases.json, a random theta_0 as phase_0/model_final.pth and its
    expansion as phase_1/model_init.pth. Returns (experiment folder, catalog path, DatasetFixture)."""
    from maskrcnn_benchmark.lst.experiment import Experiment
    from maskrcnn_benchmark.lst.phase_config import phase_config
    from maskrcnn_benchmark.modeling.detector import build_detection_model
    from maskrcnn_benchmark.lst.expansion import expand_box_predictor

    catalog, fixture = write_fixture_catalog(directory, num_images=32, seed=1)
    out = directory / "experiment"
    Experiment(str(out)).prepare(fixture.ann_file, base, num_classes - 1 - base)
    cfg0 = phase_config(TEST_LST_CONFIGS, str(out), 0, ["PATHS_CATALOG", str(catalog)])
    seed_everything(0)
    theta0 = build_detection_model(cfg0).state_dict()
    os.makedirs(Experiment(str(out)).phase(0).dir, exist_ok=True)
    torch.save({"model": theta0}, os.path.join(Experiment(str(out)).phase(0).dir, "model_final.pth"))
    expanded = expand_box_predictor(theta0, num_classes, generator=torch.Generator().manual_seed(1))
    torch.save({"model": expanded}, os.path.join(Experiment(str(out)).phase(1).dir, "model_init.pth"))
    return out, str(catalog), fixture
