"""The files of an LST experiment: the one place that knows their names.

An experiment folder OUT holds::

    OUT/phases.json                  the division (lst.division)
    OUT/phase_<t>/config.yml         the phase's full config (lst.phase_config)
                 /log.txt            training log
                 /model_init.pth     theta_{t-1} expanded for phase t >= 1 (lst.expansion)
                 /replay_plan.json   balanced-replay quotas of phase t >= 1 (lst.division)
                 /replay_balance.json  instances trained per class and epoch, written when
                                     the replay sampler is built (lst.replay_balance)
                 /last_checkpoint    the newest training checkpoint (utils.checkpoint)
                 /model_final.pth    theta_t
                 /weight_generator.pth  the meta weight generator at the end of an MWG phase
                 /inference/<dataset>/metrics.json  its evaluation
    OUT/report/                      the phase report: table.md/.json, ap_per_phase.png,
                                     ap_per_bin.png (lst.report)

A phase is finished when its evaluation exists (a metrics.json under inference/).
"""
import json
import logging
import os
import shutil

from maskrcnn_benchmark.utils.checkpoint import LAST_CHECKPOINT_TAG
from maskrcnn_benchmark.utils.miscellaneous import atomic_write_json

from .division import category_statistics, divide_categories, load_phases, load_train_annotations, make_replay_plan

PHASES_FILE_NAME = "phases.json"
REPORT_DIR_NAME = "report"
# The phase report (lst.report.write_phase_report), in the order it writes them.
REPORT_FILE_NAMES = ("table.md", "table.json", "ap_per_phase.png", "ap_per_bin.png")
PHASE_DIR_FORMAT = "phase_{}"
CONFIG_FILE_NAME = "config.yml"
LOG_FILE_NAME = "log.txt"
MODEL_INIT_FILE_NAME = "model_init.pth"
MODEL_FINAL_FILE_NAME = "model_final.pth"
REPLAY_PLAN_FILE_NAME = "replay_plan.json"
REPLAY_BALANCE_FILE_NAME = "replay_balance.json"
GENERATOR_FILE_NAME = "weight_generator.pth"
INFERENCE_DIR_NAME = "inference"
METRICS_FILE_NAME = "metrics.json"
NOT_FINISHED_NAME = "not_finished"  # never written: the final metrics of an unfinished experiment

PHASE_STATES = ("not started", "training", "trained", "finished")


def replay_balance_file(phase_dir):
    """The replay_balance.json of the phase whose folder (its OUTPUT_DIR) is ``phase_dir``."""
    return os.path.join(phase_dir, REPLAY_BALANCE_FILE_NAME)


class PhaseFiles:
    """The paths of phase ``index`` of an experiment (nothing is created or read on construction)."""

    def __init__(self, experiment_root, index):
        self.index = index
        self.dir = os.path.join(experiment_root, PHASE_DIR_FORMAT.format(index))
        self.config = os.path.join(self.dir, CONFIG_FILE_NAME)
        self.log = os.path.join(self.dir, LOG_FILE_NAME)
        self.model_init = os.path.join(self.dir, MODEL_INIT_FILE_NAME)
        self.model_final = os.path.join(self.dir, MODEL_FINAL_FILE_NAME)
        self.replay_plan = os.path.join(self.dir, REPLAY_PLAN_FILE_NAME)
        self.replay_balance = replay_balance_file(self.dir)
        self.generator = os.path.join(self.dir, GENERATOR_FILE_NAME)
        self.last_checkpoint = os.path.join(self.dir, LAST_CHECKPOINT_TAG)
        self.inference_dir = os.path.join(self.dir, INFERENCE_DIR_NAME)

    def metrics(self, dataset_name):
        """inference/<dataset_name>/metrics.json (whether or not it exists)."""
        return os.path.join(self.inference_dir, dataset_name, METRICS_FILE_NAME)

    def metrics_files(self):
        """The existing inference/<dataset>/metrics.json files, sorted by dataset name."""
        if not os.path.isdir(self.inference_dir):
            return []
        return [self.metrics(name) for name in sorted(os.listdir(self.inference_dir))
                if os.path.isfile(self.metrics(name))]

    def metrics_file(self):
        """The phase's metrics.json, or None before its evaluation; with several evaluated data
        sets the first by name (with a warning)."""
        found = self.metrics_files()
        if len(found) > 1:
            logging.getLogger(__name__).warning(
                "%s holds the metrics of several datasets; using %s", self.inference_dir, found[0])
        return found[0] if found else None

    @property
    def finished(self):
        """Trained and evaluated."""
        return bool(self.metrics_files())

    @property
    def state(self):
        """One of PHASE_STATES: "finished" (evaluated), "trained" (model_final, not evaluated),
        "training" (a checkpoint or config exists), else "not started"."""
        if self.finished:
            return "finished"
        if os.path.isfile(self.model_final):
            return "trained"
        if os.path.exists(self.last_checkpoint) or os.path.isfile(self.config):
            return "training"
        return "not started"


class Experiment:
    """An LST experiment folder (see the module docstring for its layout)."""

    def __init__(self, root):
        self.root = os.path.abspath(os.fspath(root))
        self.phases_file = os.path.join(self.root, PHASES_FILE_NAME)
        self.report_dir = os.path.join(self.root, REPORT_DIR_NAME)

    def phase(self, index):
        """The PhaseFiles of phase ``index``."""
        return PhaseFiles(self.root, index)

    def load_phases(self):
        """The validated phases dict of phases.json (ValueError naming the file and the fix)."""
        return load_phases(self.phases_file)

    def num_phases(self):
        """T + 1: the number of phases in phases.json, phase 0 included."""
        return len(self.load_phases()["groups"])

    @property
    def last_phase(self):
        """T, the index of the last phase."""
        return self.num_phases() - 1

    @property
    def final_phase_dir(self):
        """The folder of the last phase, or OUT/not_finished (which does not exist) before
        phases.json is written."""
        if os.path.isfile(self.phases_file):
            return self.phase(self.last_phase).dir
        return os.path.join(self.root, NOT_FINISHED_NAME)

    @property
    def final_metrics_file(self):
        """The metrics.json of the last phase when the experiment is finished, else a path in the
        experiment folder that does not exist (OUT/not_finished), for reports that count the run
        as not run."""
        if os.path.isfile(self.phases_file):
            metrics = self.phase(self.last_phase).metrics_file()
            if metrics is not None:
                return metrics
        return os.path.join(self.root, NOT_FINISHED_NAME)

    @property
    def complete(self):
        """Whether the experiment has nothing left to do: its last phase is evaluated and the
        phase report was written after that evaluation (every report file at least as new)."""
        metrics = self.final_metrics_file
        if not os.path.isfile(metrics):
            return False
        reports = [os.path.join(self.report_dir, name) for name in REPORT_FILE_NAMES]
        return all(os.path.isfile(report) and os.path.getmtime(report) >= os.path.getmtime(metrics)
                   for report in reports)

    def share_phase0(self, base_root):
        """Start this experiment from the finished phase 0 of the experiment ``base_root``, which
        must have trained the same base classes with the same SEED (phase 0 depends on nothing
        else). Returns whether it copied.

        * Not yet divided (no phases.json): copy the base's phase_0/ and phases.json, for variants
          of a chain that differ only in phases t >= 1 (LST w MWG, the ablations).
        * Divided, phase 0 not started: copy phase_0/ only, for chains that differ in their phase
          size (Table 3's grid points with one base size); their base classes C_0 must be the
          base's (ValueError naming both phases.json files otherwise).

        Copies nothing when the base's phase 0 is not finished or this one has started. phase_0/
        arrives whole (copied aside, then renamed) and phases.json last, so an interrupted copy is
        redone.
        """
        base = Experiment(base_root)
        divided = os.path.exists(self.phases_file)
        if not os.path.isfile(base.phases_file) or base.phase(0).state != "finished" \
                or (divided and self.phase(0).state != "not started"):
            return False
        if divided and self.load_phases()["groups"][0] != base.load_phases()["groups"][0]:
            raise ValueError(
                "{} and {} divide the classes with different base classes C_0, so phase 0 of {} cannot be "
                "shared; give the experiments the same MODEL.LST.BASE_SIZE and training annotations".format(
                    self.phases_file, base.phases_file, base.root))
        partial = self.phase(0).dir + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(base.phase(0).dir, partial)
        shutil.rmtree(self.phase(0).dir, ignore_errors=True)
        os.rename(partial, self.phase(0).dir)
        if not divided:
            shutil.copy2(base.phases_file, self.phases_file)
        return True

    def prepare(self, train_json, base, phase_size, quota_rule="ceil"):
        """Write phases.json and phase_<t>/replay_plan.json (t >= 1) from the training annotations.

        Idempotent: files that exist with the same content are rewritten unchanged. A file that
        exists with different content is never replaced: ValueError naming it (finished phases
        would silently become invalid).

        Returns (phases, {t: replay plan}, instance_counts).
        """
        data = load_train_annotations(train_json)
        instance_counts, image_counts = category_statistics(data, train_json)
        phases = divide_categories(instance_counts, base, phase_size)
        plans = {
            t: make_replay_plan(phases, t, instance_counts, image_counts, quota_rule)
            for t in range(1, len(phases["groups"]))
        }
        outputs = [(self.phases_file, phases)] + [(self.phase(t).replay_plan, plan) for t, plan in plans.items()]
        for path, content in outputs:
            _refuse_different(path, content)
        for path, content in outputs:
            atomic_write_json(content, path)
        return phases, plans, instance_counts


def _refuse_different(path, content):
    """ValueError naming ``path`` when it exists with content other than ``content``."""
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            existing = json.load(f)
    except (OSError, json.JSONDecodeError):
        existing = None
    if existing != content:
        raise ValueError(
            "{} already exists with different content (another division, training json or "
            "quota rule); phases trained with it would no longer match. Choose another output "
            "directory, or delete {} if you really mean to start over.".format(path, path)
        )
