"""Learning to Segment the Tail (LST, CVPR 2020) on top of the generic detector.

The method in one package; the core (engine/, data/, modeling/, ...) does not import it.

* experiment: the experiment folder's files (the only code that knows their names)
* division: class division by training instance count and the replay-plan maths (paper §3.1, §3.3)
* phase: one phase's classes, resolved once from phases.json
* phase_config: the config of each phase, derived from a config folder and the experiment
* expansion: growing the box predictor between phases (paper §3.2)
* distillation: the frozen teacher and its loss hook (paper §3.2, Eq. 2)
* replay_sampler: instance-level balanced replay, DATALOADER.SAMPLER "BalancedReplaySampler" (paper §3.3)
* replay_balance: the instances per class and epoch that the replay trains (replay_balance.json)
* support_sampler, weight_generator, episode, episodic_trainer: the meta weight generator (paper §3.4)
* report, mwg_analysis: the paper's tables and figures

Importing the package registers "BalancedReplaySampler" with the data loader.
"""
from . import replay_sampler  # noqa: F401  (registers the sampler)
from .distillation import attach_distillation, build_distillation_teacher
from .episodic_trainer import GENERATOR_CHECKPOINT_KEY, EpisodicTrainer, FinalNovelWeights, build_episodic_weight_generator
from .experiment import Experiment
from .phase import ResolvedPhase

__all__ = [
    "EpisodicTrainer",
    "Experiment",
    "FinalNovelWeights",
    "GENERATOR_CHECKPOINT_KEY",
    "ResolvedPhase",
    "attach_distillation",
    "build_distillation_teacher",
    "build_episodic_weight_generator",
]
