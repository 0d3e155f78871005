"""The per-phase configs of the LST chain (maskrcnn_benchmark/lst/phase_config.py, tools/lst_phase_config.py)."""
import json
import os
import subprocess
import sys

import pytest
import yaml

from maskrcnn_benchmark.lst.phase_config import phase_config
from maskrcnn_benchmark.utils.miscellaneous import save_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SYNTHETIC_LST = os.path.join(REPO, "configs", "synthetic", "lst")
SYNTHETIC_LST_QUICK = os.path.join(REPO, "configs", "synthetic", "lst_quick")
LVIS_LST = os.path.join(REPO, "configs", "lvis", "lst")


@pytest.fixture
def experiment(tmp_path):
    """An experiment folder whose phases.json divides 64 ids into 24 + 20 + 20."""
    ids = list(range(100, 164))
    phases = {"sorted_category_ids": ids, "groups": [ids[:24], ids[24:44], ids[44:]],
              "base": 24, "phase_size": 20}
    (tmp_path / "phases.json").write_text(json.dumps(phases))
    return tmp_path


def test_phase_zero_trains_the_base_classes_from_the_yaml_weights(experiment):
    config = phase_config(SYNTHETIC_LST, str(experiment), 0)
    assert config.OUTPUT_DIR == str(experiment / "phase_0")
    assert config.MODEL.ROI_BOX_HEAD.NUM_CLASSES == 25
    assert config.MODEL.LST.NUM_OLD_CLASSES == 0 and config.MODEL.LST.PHASE == 0
    assert config.MODEL.LST.PHASES_FILE == str(experiment / "phases.json")
    assert config.MODEL.WEIGHT == ""  # from the synthetic YAML: trained from scratch
    assert config.MODEL.ROI_BOX_HEAD.PREDICTOR == "FPNCosinePredictor"
    assert not config.MODEL.LST.DISTILL.ENABLED and config.DATALOADER.SAMPLER == ""


def test_phase_t_takes_the_experiment_seed_plus_t(experiment):
    assert [phase_config(SYNTHETIC_LST, str(experiment), t).SEED for t in range(3)] == [0, 1, 2]  # SEED: 0
    assert [phase_config(SYNTHETIC_LST, str(experiment), t, ["SEED", 10]).SEED for t in range(3)] == [10, 11, 12]
    assert phase_config(SYNTHETIC_LST, str(experiment), 2, ["SEED", 10]).DATALOADER.SEED == -1  # samplers: SEED


def test_a_drawn_phase_seed_is_kept_when_the_config_is_written_again(experiment):
    first = phase_config(SYNTHETIC_LST, str(experiment), 1, ["SEED", -1])
    assert first.SEED >= 0
    save_config(first, first.OUTPUT_DIR + "/config.yml")
    assert phase_config(SYNTHETIC_LST, str(experiment), 1, ["SEED", -1]).SEED == first.SEED
    assert phase_config(SYNTHETIC_LST, str(experiment), 1, ["SEED", 4]).SEED == 5  # an explicit seed wins


def test_incremental_phase_chains_to_the_previous_phase(experiment):
    config = phase_config(SYNTHETIC_LST, str(experiment), 2, opts=["SOLVER.MAX_ITER", 11])
    assert config.MODEL.ROI_BOX_HEAD.NUM_CLASSES == 65
    assert config.MODEL.LST.NUM_OLD_CLASSES == 44
    assert config.MODEL.WEIGHT == str(experiment / "phase_2" / "model_init.pth")
    assert config.MODEL.LST.DISTILL.TEACHER_WEIGHT == str(experiment / "phase_1" / "model_final.pth")
    assert config.MODEL.LST.REPLAY_PLAN_FILE == str(experiment / "phase_2" / "replay_plan.json")
    assert config.MODEL.BACKBONE.FREEZE_CONV_BODY_AT == 5
    assert config.DATALOADER.SAMPLER == "BalancedReplaySampler" and config.MODEL.LST.DISTILL.ENABLED
    assert config.SOLVER.MAX_ITER == 11  # overrides apply


def test_meta_weight_generator_starts_in_phase_one_and_carries_over(experiment):
    opts = ["MODEL.FEW_SHOT.ENABLED", True]
    assert not phase_config(SYNTHETIC_LST, str(experiment), 0, opts).MODEL.FEW_SHOT.ENABLED
    first = phase_config(SYNTHETIC_LST, str(experiment), 1, opts)
    assert first.MODEL.FEW_SHOT.ENABLED and first.MODEL.FEW_SHOT.GENERATOR_WEIGHT == ""
    second = phase_config(SYNTHETIC_LST, str(experiment), 2, opts)
    assert second.MODEL.FEW_SHOT.GENERATOR_WEIGHT == str(experiment / "phase_1" / "weight_generator.pth")
    assert phase_config(SYNTHETIC_LST, str(experiment), 2).MODEL.FEW_SHOT.GENERATOR_WEIGHT == ""


@pytest.mark.parametrize("phase", [0, 1, 2])
def test_quick_schedule_is_the_full_one_at_half_the_iterations(experiment, phase):
    full = phase_config(SYNTHETIC_LST, str(experiment), phase)
    quick = phase_config(SYNTHETIC_LST_QUICK, str(experiment), phase)
    assert quick.SOLVER.MAX_ITER * 2 == full.SOLVER.MAX_ITER
    assert tuple(step * 2 for step in quick.SOLVER.STEPS) == tuple(full.SOLVER.STEPS)
    quick.defrost()
    quick.SOLVER.MAX_ITER, quick.SOLVER.STEPS = full.SOLVER.MAX_ITER, full.SOLVER.STEPS
    assert quick.dump() == full.dump()


def test_overrides_cannot_replace_derived_keys(experiment):
    config = phase_config(SYNTHETIC_LST, str(experiment), 1, opts=["MODEL.ROI_BOX_HEAD.NUM_CLASSES", 3])
    assert config.MODEL.ROI_BOX_HEAD.NUM_CLASSES == 45


def test_missing_phase_and_missing_files_are_clear_errors(experiment, tmp_path_factory):
    with pytest.raises(ValueError, match="phases 0..2"):
        phase_config(SYNTHETIC_LST, str(experiment), 3)
    with pytest.raises(ValueError, match="lst_prepare"):
        phase_config(SYNTHETIC_LST, str(tmp_path_factory.mktemp("empty")), 0)
    with pytest.raises(FileNotFoundError, match="incremental.yaml"):
        phase_config(str(tmp_path_factory.mktemp("no_configs")), str(experiment), 1)


def write_division(directory, num_categories, base, phase_size):
    ids = list(range(1, num_categories + 1))
    groups = [ids[:base]] + [ids[start:start + phase_size] for start in range(base, num_categories, phase_size)]
    phases = {"sorted_category_ids": ids, "groups": groups, "base": base, "phase_size": phase_size}
    (directory / "phases.json").write_text(json.dumps(phases))
    return directory


def test_lvis_configs_follow_the_paper_division(tmp_path):
    experiment = write_division(tmp_path, 1230, 270, 160)
    config = phase_config(LVIS_LST, str(experiment), 1)
    assert (config.MODEL.LST.BASE_SIZE, config.MODEL.LST.PHASE_SIZE) == (270, 160)
    assert config.MODEL.BACKBONE.CONV_BODY == "R-50-FPN"
    assert config.MODEL.ROI_HEADS.DETECTIONS_PER_IMG == 300
    assert config.MODEL.ROI_HEADS.SCORE_THRESH == 0.0 and config.SOLVER.BASE_LR == 0.005
    assert phase_config(LVIS_LST, str(experiment), 0).MODEL.ROI_HEADS.SCORE_THRESH == 0.05


def test_a_config_folder_with_another_division_is_refused(experiment):
    with pytest.raises(ValueError, match=r"lvis/lst/phase0.yaml sets MODEL.LST.BASE_SIZE 270 but .*phases.json "
                                         r"was divided with 24"):
        phase_config(LVIS_LST, str(experiment), 0)


def test_a_replay_plan_of_another_quota_rule_is_refused_naming_both_files(experiment):
    plan = experiment / "phase_1" / "replay_plan.json"
    plan.parent.mkdir()
    plan.write_text(json.dumps({"quota_rule": "round", "n_c": 1.0, "old_classes": {}}))
    with pytest.raises(ValueError, match=r"synthetic/lst/incremental.yaml sets MODEL.LST.REPLAY_QUOTA_RULE 'ceil' "
                                         r"but .*phase_1/replay_plan.json was made with 'round'"):
        phase_config(SYNTHETIC_LST, str(experiment), 1)
    assert phase_config(SYNTHETIC_LST, str(experiment), 1, ["MODEL.LST.REPLAY_QUOTA_RULE", "round"])


@pytest.mark.slow
def test_cli_writes_a_config_that_train_net_can_merge(experiment):
    tool = os.path.join(REPO, "tools", "lst_phase_config.py")
    out = subprocess.run([sys.executable, tool, "--config-dir", SYNTHETIC_LST, "--experiment-dir",
                          str(experiment), "--phase", "1", "SOLVER.MAX_ITER", "5"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(experiment / "phase_1" / "config.yml")
    written = yaml.safe_load(open(out))
    assert written["SOLVER"]["MAX_ITER"] == 5 and written["MODEL"]["LST"]["PHASE"] == 1
    described = subprocess.run([sys.executable, tool, "--config-dir", SYNTHETIC_LST, "--describe"],
                               capture_output=True, text=True, check=True).stdout.split()
    assert described[:4] == ["24", "20", "ceil", "0"] and described[4].endswith("synthetic_lt/train.json")
    failed = subprocess.run([sys.executable, tool, "--config-dir", SYNTHETIC_LST, "--experiment-dir",
                             str(experiment), "--phase", "7"], capture_output=True, text=True)
    assert failed.returncode != 0 and "phase 7" in failed.stderr
