"""The classes of one LST phase, resolved once from phases.json at set-up (paper §3.1).

Category ids are those of the annotation file; training labels are 1 + the position in
``seen`` (so the old classes' labels 1..len(old) are a prefix of the phase's).
"""
from dataclasses import dataclass

from maskrcnn_benchmark.data import make_data_loader

from .division import load_phases, load_replay_plan, replay_quotas_by_label


@dataclass(frozen=True)
class ResolvedPhase:
    """Phase ``index`` of the division in ``phases_file``.

    Attributes:
        index (int): t.
        phases_file (str): the phases.json it was read from.
        base (list[int]): C_0's category ids.
        old (list[int]): groups[0..t-1] (empty in phase 0).
        new (list[int]): groups[t] (C_0 itself in phase 0).
        seen (list[int]): old + new, in label order.
    """

    index: int
    phases_file: str
    base: list
    old: list
    new: list

    @property
    def seen(self):
        return self.old + self.new

    @property
    def num_classes(self):
        """MODEL.ROI_BOX_HEAD.NUM_CLASSES of the phase: background + seen categories."""
        return 1 + len(self.seen)

    @property
    def num_old_classes(self):
        return len(self.old)

    @property
    def num_base_classes(self):
        return len(self.base)

    @property
    def new_labels(self):
        """The training labels of the new classes: len(old) + 1 .. len(seen)."""
        return list(range(self.num_old_classes + 1, self.num_classes))

    def category_groups(self):
        """The evaluation's AP groups: "old", "new" (phases t >= 1) and "all" (the seen classes)."""
        groups = {}
        if self.index > 0:
            groups["old"] = list(self.old)
            groups["new"] = list(self.new)
        groups["all"] = list(self.seen)
        return groups

    def data_loader_options(self, cfg):
        """make_data_loader's keyword arguments for this phase: its label space and, for
        DATALOADER.SAMPLER "BalancedReplaySampler", the phase itself."""
        options = {"category_ids": self.seen}
        if cfg.DATALOADER.SAMPLER == "BalancedReplaySampler":
            options["sampler_options"] = {"phase": self}
        return options

    def evaluation_options(self):
        """run_test's keyword arguments: the seen classes and the AP groups."""
        return {"category_ids": self.seen, "category_groups": self.category_groups()}

    @classmethod
    def from_phases(cls, phases, index, phases_file=""):
        """Phase ``index`` of a phases dict; ValueError naming ``phases_file`` when there is no such phase."""
        groups = phases["groups"]
        if not isinstance(index, int) or not 0 <= index < len(groups):
            raise ValueError(
                "phase {} does not exist: {} has phases 0..{}; set MODEL.LST.PHASE accordingly.".format(
                    index, phases_file or "the division", len(groups) - 1)
            )
        old = [c for group in groups[:index] for c in group]
        return cls(index=index, phases_file=phases_file, base=list(groups[0]), old=old, new=list(groups[index]))

    @classmethod
    def from_file(cls, phases_file, index):
        """Phase ``index`` of the phases.json ``phases_file`` (validated)."""
        return cls.from_phases(load_phases(phases_file), index, phases_file)

    @classmethod
    def from_config(cls, cfg):
        """The phase of MODEL.LST.PHASE in MODEL.LST.PHASES_FILE, checked against the config's
        class counts; None when no phases file is set (not an LST phase)."""
        lst = cfg.MODEL.LST
        if not lst.PHASES_FILE:
            return None
        phase = cls.from_file(lst.PHASES_FILE, lst.PHASE)
        checks = (("MODEL.ROI_BOX_HEAD.NUM_CLASSES", cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES, phase.num_classes,
                   "background + {} categories".format(len(phase.seen))),
                  ("MODEL.LST.NUM_OLD_CLASSES", lst.NUM_OLD_CLASSES, phase.num_old_classes, "old classes"))
        for key, configured, expected, meaning in checks:
            if configured != expected:
                raise ValueError(
                    "{} is {} but phase {} of {} has {} ({}); set {} to {} (tools/lst_phase_config.py "
                    "derives it).".format(key, configured, phase.index, lst.PHASES_FILE, expected, meaning,
                                          key, expected)
                )
        return phase

    def replay_quotas(self, replay_plan_file, category_id_to_label, quota_rule):
        """{old training label: images replayed per epoch} from a replay_plan.json of this phase.

        ValueError naming the plan when it belongs to another phase or division, or was made
        with another quota rule than ``quota_rule`` (MODEL.LST.REPLAY_QUOTA_RULE).
        """
        plan = load_replay_plan(replay_plan_file)
        if plan.get("quota_rule", quota_rule) != quota_rule:
            raise ValueError(
                "{} was made with the quota rule {!r} but the phase's config sets "
                "MODEL.LST.REPLAY_QUOTA_RULE {!r}; make both the same (tools/lst_prepare.py "
                "--quota-rule, or the key in the phase's YAML) and rerun tools/lst_prepare.py into a "
                "new experiment folder.".format(replay_plan_file, plan["quota_rule"], quota_rule)
            )
        return replay_quotas_by_label(plan, category_id_to_label, self.num_old_classes, source=replay_plan_file)


def make_phase_data_loader(cfg, is_train=True, **kwargs):
    """make_data_loader with the options of the config's LST phase (none when it is not one); for
    tools and tests that build a phase's loaders without tools/train_net.py's set-up."""
    phase = ResolvedPhase.from_config(cfg)
    options = {}
    if phase is not None:
        options = phase.data_loader_options(cfg) if is_train else {"category_ids": phase.seen}
    return make_data_loader(cfg, is_train=is_train, **kwargs, **options)
