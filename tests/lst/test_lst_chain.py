"""The LST phase chain from the command line, on the tiny CPU config and the LVIS test fixture:
lst_prepare -> lst_phase_config -> lst_expand -> train_net per phase, an incremental phase killed
mid-way resuming to the uninterrupted weights, and run_phases.sh chaining it all and resuming."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from fixtures_training import (
    REPO_ROOT,
    TEST_LST_CONFIGS,
    check_ran,
    load_checkpoint,
    max_weight_difference,
    run_tool,
)

# Every test trains LST phases with tools/train_net.py or lst_scripts/run_phases.sh.
pytestmark = pytest.mark.slow


def phase_config(workspace, experiment, phase):
    result = run_tool("lst_phase_config.py", ["--config-dir", TEST_LST_CONFIGS, "--experiment-dir",
                                              experiment, "--phase", phase, "PATHS_CATALOG",
                                              workspace["catalog"]], workspace["env"])
    check_ran(result)
    return result.stdout.strip()


@pytest.fixture(scope="module")
def phase0(workspace):
    """An experiment with phases.json and a trained (not evaluated) phase 0."""
    experiment = workspace["dir"] / "experiment"
    check_ran(run_tool("lst_prepare.py", ["--train-json", workspace["fixture"].ann_file, "--base", 4,
                                          "--phase-size", 2, "--output-dir", experiment], workspace["env"]))
    config = phase_config(workspace, experiment, 0)
    check_ran(run_tool("train_net.py", ["--config-file", config, "--skip-test"], workspace["env"]))
    return experiment


def prepare_phase1(workspace, experiment):
    config = phase_config(workspace, experiment, 1)
    check_ran(run_tool("lst_expand.py", ["--input", experiment / "phase_0" / "model_final.pth", "--output",
                                         experiment / "phase_1" / "model_init.pth", "--num-classes", 7],
                       workspace["env"]))
    return config


@pytest.fixture(scope="module")
def phase1_uninterrupted(workspace, phase0):
    config = prepare_phase1(workspace, phase0)
    result = run_tool("train_net.py", ["--config-file", config, "--skip-test"], workspace["env"])
    check_ran(result)
    return phase0 / "phase_1", result


def test_incremental_phase_trains_the_expanded_model_with_distillation(workspace, phase1_uninterrupted):
    phase_dir, result = phase1_uninterrupted
    log = (phase_dir / "log.txt").read_text()
    assert "loss_distill" in log and "iter: 8" in log
    final = load_checkpoint(phase_dir / "model_final.pth")["model"]
    assert final["roi_heads.box.predictor.cls_score.weight"].shape[0] == 7
    assert not any(key.startswith("teacher") for key in final)
    plan = json.loads((phase_dir / "replay_plan.json").read_text())
    assert len(plan["old_classes"]) == 4
    balance = json.loads((phase_dir / "replay_balance.json").read_text())
    assert balance["new_image_labels"] == "per_class" and "Replay balance" in log
    assert [c["label"] for c in balance["classes"] if c["group"] == "old"] == [1, 2, 3, 4]
    # the body is frozen (FREEZE_CONV_BODY_AT 5): its weights are those of the expanded init
    initial = load_checkpoint(phase_dir / "model_init.pth")["model"]
    body = [k for k in final if k.startswith("backbone.body.layer4") and k.endswith("weight")]
    assert body and all((final[k] == initial[k]).all() for k in body)


def test_the_balance_tool_prints_what_training_wrote(workspace, phase1_uninterrupted):
    phase_dir, _ = phase1_uninterrupted
    result = run_tool("lst_replay_balance.py", ["--config-dir", TEST_LST_CONFIGS, "--experiment-dir", phase_dir.parent,
                                                "--phase", 1, "--json", "PATHS_CATALOG", workspace["catalog"]],
                      workspace["env"])
    check_ran(result)
    printed = json.loads(result.stdout)
    assert printed == {"phase": 1, **json.loads((phase_dir / "replay_balance.json").read_text())}
    summary = run_tool("lst_replay_balance.py", ["--config-dir", TEST_LST_CONFIGS, "--experiment-dir",
                                                 phase_dir.parent, "PATHS_CATALOG", workspace["catalog"]],
                       workspace["env"])
    check_ran(summary)
    assert "NEW_IMAGE_LABELS 'per_class' (this run)" in summary.stdout and "NEW_IMAGE_LABELS 'all'" in summary.stdout


def test_incremental_phase_killed_mid_way_resumes_to_the_same_weights(workspace, phase0, phase1_uninterrupted):
    experiment = workspace["dir"] / "killed_experiment"
    experiment.mkdir()
    shutil.copy(phase0 / "phases.json", experiment)
    shutil.copytree(phase0 / "phase_0", experiment / "phase_0")
    (experiment / "phase_1").mkdir()
    shutil.copy(phase0 / "phase_1" / "replay_plan.json", experiment / "phase_1")
    config = prepare_phase1(workspace, experiment)
    out = experiment / "phase_1"
    command = [sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"), "--config-file", config, "--skip-test"]
    process = subprocess.Popen(command, env=workspace["env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (out / "last_checkpoint").exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "train_net.py ended before it could be killed"
    assert not (out / "model_final.pth").exists()

    check_ran(run_tool("train_net.py", ["--config-file", config, "--skip-test"], workspace["env"]))
    resumed = load_checkpoint(out / "model_final.pth")
    uninterrupted = load_checkpoint(phase1_uninterrupted[0] / "model_final.pth")
    assert resumed["iteration"] == 8
    assert max_weight_difference(resumed["model"], uninterrupted["model"]) <= 1e-6


def test_run_phases_chains_every_step_and_resumes(workspace):
    experiment = workspace["dir"] / "run_phases"
    # named relative to the repository, where the script runs, as in the README's commands
    command = ["bash", os.path.join(REPO_ROOT, "lst_scripts", "run_phases.sh"), "--config-dir", TEST_LST_CONFIGS,
               "--output-dir", os.path.relpath(experiment, REPO_ROOT), "PATHS_CATALOG", workspace["catalog"]]
    first = subprocess.run(command, env=workspace["env"], capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "| phase | #classes |" in first.stdout  # the table is printed at the end
    table = json.loads((experiment / "report" / "table.json").read_text())
    assert [row["phase"] for row in table["rows"]] == [0, 1]
    for name in ("table.md", "ap_per_phase.png", "ap_per_bin.png"):
        assert (experiment / "report" / name).is_file()
    metrics = json.loads(next((experiment / "phase_1" / "inference").glob("*/metrics.json")).read_text())
    assert set(metrics["segm"]["groups"]) == {"old", "new", "all"}
    assert len(metrics["segm"]["per_category_AP"]) == 6

    second = subprocess.run(command, env=workspace["env"], capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "phase 0 of 1: done" in second.stdout and "phase 1 of 1: done" in second.stdout
