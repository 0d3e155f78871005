"""The LST phase chain's configs: one per phase, derived so that no phase needs a hand edit
(docs/lst.md, "The phase chain").

An LST experiment is a config folder with two YAML files:

* ``phase0.yaml``: base training of theta_0 on C_0 (modified backbone); it also sets
  MODEL.LST.BASE_SIZE and MODEL.LST.PHASE_SIZE, which divide the classes;
* ``incremental.yaml``: the settings of every phase t >= 1 (usually ``_BASE_: phase0.yaml``
  plus freezing, balanced replay, distillation and the fine-tuning schedule).

and an experiment folder OUT (lst.experiment). The config of phase t is its YAML plus the keys
this module derives from the division and the previous phase's files:

* OUTPUT_DIR = OUT/phase_<t>, MODEL.LST.PHASE = t, MODEL.LST.PHASES_FILE = OUT/phases.json;
* SEED = the experiment's SEED + t (see phase_seed), the seed of the phase's initialisation,
  samplers and expansion (tools/lst_expand.py reads it from the phase config);
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
from maskrcnn_benchmark.utils.seed import SEED_BOUND, draw_seed, saved_seed

from .division import load_replay_plan
from .experiment import Experiment
from .phase import ResolvedPhase

PHASE0_CONFIG = "phase0.yaml"
INCREMENTAL_CONFIG = "incremental.yaml"


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


def phase_seed(seed, phase, config_file):
    """The SEED of phase ``phase`` of an experiment whose config sets ``seed``: seed + phase, so
    that the phases of one experiment draw differently and the same SEED repeats the chain.

    ``seed`` -1 (random): the SEED already saved in the phase's ``config_file`` when there is one
    (a rerun of the chain resumes the phase with its seed), else one drawn at random, which is
    written into the phase config so that the phase repeats from it.
    """
    if seed >= 0:
        return (seed + phase) % SEED_BOUND
    saved = saved_seed(config_file)
    return saved if saved >= 0 else draw_seed()


def check_division_keys(config, yaml_path, phases, phases_file):
    """ValueError naming both files when the YAML's MODEL.LST.BASE_SIZE / PHASE_SIZE differ from
    the division in phases.json (the experiment was prepared with other settings)."""
    for key, value in (("BASE_SIZE", phases["base"]), ("PHASE_SIZE", phases["phase_size"])):
        configured = getattr(config.MODEL.LST, key)
        if configured != value:
            raise ValueError(
                "{} sets MODEL.LST.{} {} but {} was divided with {}; use the config folder the "
                "experiment was prepared with, or prepare a new experiment folder (tools/lst_prepare.py)".format(
                    yaml_path, key, configured, phases_file, value)
            )


def check_quota_rule(config, yaml_path, replay_plan_file):
    """ValueError naming both files when the phase's YAML sets another MODEL.LST.REPLAY_QUOTA_RULE
    than the one its replay_plan.json was made with. Nothing to check before the plan exists
    (training then stops at the missing plan)."""
    if config.MODEL.LST.REPLAY != "balanced" or config.DATALOADER.SAMPLER != "BalancedReplaySampler":
        return
    if not os.path.isfile(replay_plan_file):
        return
    planned = load_replay_plan(replay_plan_file).get("quota_rule")
    configured = config.MODEL.LST.REPLAY_QUOTA_RULE
    if planned != configured:
        raise ValueError(
            "{} sets MODEL.LST.REPLAY_QUOTA_RULE {!r} but {} was made with {!r}; prepare the experiment "
            "with tools/lst_prepare.py --quota-rule {} (a new experiment folder), or set the key to {!r}".format(
                yaml_path, configured, replay_plan_file, planned, configured, planned)
        )


def phase_config(config_dir, experiment_dir, phase, opts=()):
    """The frozen config of phase ``phase`` (see the module docstring for the derived keys).

    ``opts`` (KEY VALUE pairs) override the YAML but not the derived keys. Every MODEL.LST key
    comes from the YAML of that phase (phase0.yaml or incremental.yaml) and ``opts``.
    """
    experiment = Experiment(experiment_dir)
    phases = experiment.load_phases()
    resolved = ResolvedPhase.from_phases(phases, phase, experiment.phases_file)
    yaml_path = phase_yaml(config_dir, phase)
    config = load_yaml_config(yaml_path, opts)
    check_division_keys(config, yaml_path, phases, experiment.phases_file)
    files = experiment.phase(phase)
    derived = [
        "OUTPUT_DIR", files.dir,
        "SEED", phase_seed(config.SEED, phase, files.config),
        "MODEL.LST.PHASE", phase,
        "MODEL.LST.PHASES_FILE", experiment.phases_file,
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES", resolved.num_classes,
        "MODEL.LST.NUM_OLD_CLASSES", resolved.num_old_classes,
    ]
    if phase == 0:
        derived += ["MODEL.FEW_SHOT.ENABLED", False]
    else:
        previous = experiment.phase(phase - 1)
        derived += [
            "MODEL.WEIGHT", files.model_init,
            "MODEL.LST.REPLAY_PLAN_FILE", files.replay_plan,
            "MODEL.LST.DISTILL.TEACHER_WEIGHT", previous.model_final,
        ]
        check_quota_rule(config, yaml_path, files.replay_plan)
        if phase > 1 and config.MODEL.FEW_SHOT.ENABLED:
            derived += ["MODEL.FEW_SHOT.GENERATOR_WEIGHT", previous.generator]
    config.merge_from_list(derived)
    config.freeze()
    return config
