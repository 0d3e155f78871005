"""The LST phase chain's configs and files (DESIGN.md §4).

An LST experiment is a config folder with two YAML files:

* ``phase0.yaml``: base training of theta_0 on C_0 (modified backbone); it also sets
  MODEL.LST.BASE_SIZE and MODEL.LST.PHASE_SIZE, which divide the classes;
* ``incremental.yaml``: the settings of every phase t >= 1 (usually ``_BASE_: phase0.yaml``
  plus freezing, balanced replay, distillation and the fine-tuning schedule).

and an experiment folder OUT holding ``phases.json`` and one ``phase_<t>/`` per phase. The
config of phase t is its YAML plus the keys this module derives from the division and the
previous phase's files, so no phase needs a hand edit:

* OUTPUT_DIR = OUT/phase_<t>, MODEL.LST.PHASE = t, MODEL.LST.PHASES_FILE = OUT/phases.json;
* MODEL.ROI_BOX_HEAD.NUM_CLASSES = 1 + |C_0 ∪ ... ∪ C_t|, MODEL.LST.NUM_OLD_CLASSES = |C_0 ∪ ... ∪ C_t-1|;
* for t >= 1: MODEL.WEIGHT = OUT/phase_<t>/model_init.pth (theta_{t-1} expanded by
  tools/lst_expand.py), MODEL.LST.REPLAY_PLAN_FILE = OUT/phase_<t>/replay_plan.json and
  MODEL.LST.DISTILL.TEACHER_WEIGHT = OUT/phase_<t-1>/model_final.pth;
* the meta weight generator (MODEL.FEW_SHOT.ENABLED) trains in phases t >= 1 only, so it is
  switched off in phase 0, and from phase 2 on it starts from the previous phase's generator:
  MODEL.FEW_SHOT.GENERATOR_WEIGHT = OUT/phase_<t-1>/weight_generator.pth.
"""
import os

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.config.config_file import merge_config_file
from maskrcnn_benchmark.data.catalog import load_dataset_catalog
from maskrcnn_benchmark.data.lst_phases import load_phases, num_classes, old_category_ids, phase_dir
from maskrcnn_benchmark.engine.episodic_trainer import GENERATOR_FILE_NAME

PHASE0_CONFIG = "phase0.yaml"
INCREMENTAL_CONFIG = "incremental.yaml"


def phases_file(experiment_dir):
    return os.path.join(experiment_dir, "phases.json")


def phase_yaml(config_dir, phase):
    """The YAML of phase ``phase`` in ``config_dir``; FileNotFoundError names the folder's rule."""
    path = os.path.join(config_dir, PHASE0_CONFIG if phase == 0 else INCREMENTAL_CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            "{} does not exist: an LST config folder holds {} (phase 0) and {} (phases t >= 1); "
            "see configs/synthetic/lst/".format(path, PHASE0_CONFIG, INCREMENTAL_CONFIG)
        )
    return path


def load_yaml_config(path, opts=()):
    """A clone of the defaults with the YAML at ``path`` and the KEY VALUE ``opts`` merged."""
    config = default_cfg.clone()
    merge_config_file(config, path)
    config.merge_from_list(list(opts))
    return config


def train_annotation_file(config):
    """The annotation file of DATASETS.TRAIN (exactly one dataset), from the paths catalog."""
    if len(config.DATASETS.TRAIN) != 1:
        raise ValueError(
            "The LST division needs exactly one training dataset, got DATASETS.TRAIN = {}".format(
                config.DATASETS.TRAIN))
    return load_dataset_catalog(config).get(config.DATASETS.TRAIN[0])["args"]["ann_file"]


def phase_config(config_dir, experiment_dir, phase, opts=()):
    """The frozen config of phase ``phase`` (see the module docstring for the derived keys).

    ``opts`` (KEY VALUE pairs) override the YAML but not the derived keys.
    """
    phases = load_phases(phases_file(experiment_dir))
    last_phase = len(phases["groups"]) - 1
    if not 0 <= phase <= last_phase:
        raise ValueError("{} divides the classes into phases 0..{}; phase {} does not exist".format(
            phases_file(experiment_dir), last_phase, phase))
    config = load_yaml_config(phase_yaml(config_dir, phase), opts)
    out = os.path.abspath(phase_dir(experiment_dir, phase))
    derived = [
        "OUTPUT_DIR", out,
        "MODEL.LST.PHASE", phase,
        "MODEL.LST.PHASES_FILE", os.path.abspath(phases_file(experiment_dir)),
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES", num_classes(phases, phase),
        "MODEL.LST.NUM_OLD_CLASSES", len(old_category_ids(phases, phase)),
    ]
    if phase == 0:
        derived += ["MODEL.FEW_SHOT.ENABLED", False]
    else:
        previous = os.path.abspath(phase_dir(experiment_dir, phase - 1))
        derived += [
            "MODEL.WEIGHT", os.path.join(out, "model_init.pth"),
            "MODEL.LST.REPLAY_PLAN_FILE", os.path.join(out, "replay_plan.json"),
            "MODEL.LST.DISTILL.TEACHER_WEIGHT", os.path.join(previous, "model_final.pth"),
        ]
        if phase > 1 and config.MODEL.FEW_SHOT.ENABLED:
            derived += ["MODEL.FEW_SHOT.GENERATOR_WEIGHT",
                        os.path.join(previous, GENERATOR_FILE_NAME)]
    config.merge_from_list(derived)
    config.freeze()
    return config
