"""tools/train_net.py, tools/test_net.py and tools/demo.py run as command-line programs on the tiny
CPU config and the LVIS test fixture: checkpoints, exact resumption after a stop, a kill or
Ctrl-C / SIGTERM (which save the iteration they stop at), evaluation, config errors and the demo
drawing."""
import importlib.util
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from fixtures_training import (
    REPO_ROOT,
    TINY_CONFIG,
    check_ran,
    load_checkpoint,
    max_weight_difference,
    run_tool,
    tiny_cfg,
    tool_env,
)
from maskrcnn_benchmark.data import make_data_loader
from maskrcnn_benchmark.structures.bounding_box import BoxList


def train_args(workspace, output_dir, *opts, skip_test=True):
    return ["--config-file", TINY_CONFIG, *(["--skip-test"] if skip_test else []),
            "PATHS_CATALOG", workspace["catalog"], "OUTPUT_DIR", output_dir, *opts]


@pytest.fixture(scope="module")
def trained(workspace):
    """An uninterrupted 8-iteration run (checkpoints every 4), evaluated after training."""
    output_dir = workspace["dir"] / "uninterrupted"
    check_ran(run_tool("train_net.py", train_args(workspace, output_dir, skip_test=False), workspace["env"]))
    return output_dir


@pytest.mark.slow
def test_train_net_writes_checkpoints_config_labels_and_evaluation(trained):
    for name in ("model_0000004.pth", "model_0000008.pth", "model_final.pth", "config.yml", "labels.json", "log.txt"):
        assert (trained / name).is_file(), name
    assert (trained / "last_checkpoint").read_text().strip() == "model_final.pth"
    assert load_checkpoint(trained / "model_0000004.pth")["iteration"] == 4
    assert load_checkpoint(trained / "model_final.pth")["iteration"] == 8
    saved_config = yaml.safe_load((trained / "config.yml").read_text())
    assert saved_config["OUTPUT_DIR"] == str(trained)
    assert saved_config["MODEL"]["BACKBONE"]["CONV_BODY"] == "R-18-FPN"
    assert "iter: 8" in (trained / "log.txt").read_text()
    evaluation = trained / "inference" / "fixture_test"
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert {"bbox", "segm"} <= set(metrics)
    # the training annotations of DATASETS.TRAIN give the paper's instance-count bins
    assert list(metrics["segm"]["bins"])[0] == "(0,1]"
    assert len(torch.load(evaluation / "predictions.pth", weights_only=False)) == 16


@pytest.mark.slow
def test_run_stopped_and_resumed_ends_with_the_uninterrupted_weights(workspace, trained):
    output_dir = workspace["dir"] / "stopped_at_4"
    check_ran(run_tool("train_net.py", train_args(workspace, output_dir, "SOLVER.MAX_ITER", 4), workspace["env"]))
    assert load_checkpoint(output_dir / "model_final.pth")["iteration"] == 4
    resumed = run_tool("train_net.py", train_args(workspace, output_dir), workspace["env"])
    check_ran(resumed)
    assert f"Loading checkpoint from {output_dir / 'model_final.pth'}" in resumed.stdout
    final = load_checkpoint(output_dir / "model_final.pth")
    assert final["iteration"] == 8
    assert max_weight_difference(final["model"], load_checkpoint(trained / "model_final.pth")["model"]) <= 1e-6


@pytest.mark.slow
def test_run_killed_after_a_checkpoint_resumes_to_the_uninterrupted_weights(workspace, trained):
    output_dir = workspace["dir"] / "killed"
    command = [sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"),
               *map(str, train_args(workspace, output_dir, "SOLVER.CHECKPOINT_PERIOD", 2))]
    process = subprocess.Popen(command, env=workspace["env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 240
        while not (output_dir / "last_checkpoint").exists() and process.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    assert process.returncode == -signal.SIGKILL, "train_net.py ended before it could be killed"
    assert (output_dir / "last_checkpoint").exists() and not (output_dir / "model_final.pth").exists()

    resumed = run_tool("train_net.py", train_args(workspace, output_dir, "SOLVER.CHECKPOINT_PERIOD", 2), workspace["env"])
    check_ran(resumed)
    assert re.search(r"Loading checkpoint from .*model_000000\d\.pth", resumed.stdout)
    final = load_checkpoint(output_dir / "model_final.pth")
    assert final["iteration"] == 8
    assert max_weight_difference(final["model"], load_checkpoint(trained / "model_final.pth")["model"]) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("sig, workers", [(signal.SIGTERM, 0), (signal.SIGINT, 1)])
def test_run_stopped_by_a_signal_saves_its_iteration_and_resumes(workspace, trained, sig, workers):
    """SIGTERM or Ctrl-C (SIGINT to the whole process group, data-loading worker included) while
    training: a checkpoint of the iteration it was in, the signal's exit status, and a rerun that
    finishes; with no workers the random draws resume exactly, to the uninterrupted weights."""
    output_dir = workspace["dir"] / "stopped_by_{}".format(sig.name)
    args = train_args(workspace, output_dir, "SOLVER.CHECKPOINT_PERIOD", 100, "DATALOADER.NUM_WORKERS", workers)
    process = subprocess.Popen([sys.executable, os.path.join(REPO_ROOT, "tools", "train_net.py"), *map(str, args)],
                               env=workspace["env"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        deadline = time.time() + 240
        log = output_dir / "log.txt"
        while process.poll() is None and time.time() < deadline and not (
                log.exists() and "Start training" in log.read_text()):
            time.sleep(0.01)
        os.killpg(process.pid, sig)
        stdout, stderr = process.communicate(timeout=240)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 128 + sig, stderr[-3000:]
    tagged = (output_dir / "last_checkpoint").read_text().strip()
    stopped_at = load_checkpoint(output_dir / tagged)["iteration"]
    assert tagged == "model_{:07d}.pth".format(stopped_at) and 1 <= stopped_at < 8
    assert "train_net.py: stopped by {} after iteration {}; saved {}: rerun the same command to resume".format(
        sig.name, stopped_at, output_dir / tagged) in (output_dir / "log.txt").read_text()
    assert not (output_dir / "model_final.pth").exists()

    resumed = run_tool("train_net.py", args, workspace["env"])
    check_ran(resumed)
    assert "Loading checkpoint from {}".format(output_dir / tagged) in resumed.stdout
    final = load_checkpoint(output_dir / "model_final.pth")
    assert final["iteration"] == 8
    if workers == 0:
        assert max_weight_difference(final["model"], load_checkpoint(trained / "model_final.pth")["model"]) <= 1e-6


def train_seeded(workspace, output_dir, *opts, config_file=TINY_CONFIG):
    """3 iterations of the tiny model in an environment that seeds nothing itself (no
    TORCH_DETECTRON_ENV_MODULE): the weights depend on SEED alone. Returns the final state dict."""
    args = ["--config-file", config_file, "--skip-test", "PATHS_CATALOG", workspace["catalog"],
            "OUTPUT_DIR", output_dir, "SOLVER.MAX_ITER", 3, *opts]
    check_ran(run_tool("train_net.py", args, tool_env()))
    return load_checkpoint(output_dir / "model_final.pth")["model"]


@pytest.mark.slow
def test_the_same_seed_gives_the_same_weights_and_another_seed_other_weights(workspace):
    first = train_seeded(workspace, workspace["dir"] / "seed3_a", "SEED", 3)
    again = train_seeded(workspace, workspace["dir"] / "seed3_b", "SEED", 3)
    other = train_seeded(workspace, workspace["dir"] / "seed4", "SEED", 4)
    assert max_weight_difference(first, again) == 0
    assert max_weight_difference(first, other) > 1e-3
    saved = yaml.safe_load((workspace["dir"] / "seed3_a" / "config.yml").read_text())
    assert saved["SEED"] == 3 and saved["DATALOADER"]["SEED"] == -1  # the samplers take SEED


@pytest.mark.slow
def test_a_drawn_seed_is_saved_and_its_config_yml_repeats_the_run(workspace):
    drawn_dir = workspace["dir"] / "seed_drawn"
    drawn = train_seeded(workspace, drawn_dir, "SEED", -1)
    saved = yaml.safe_load((drawn_dir / "config.yml").read_text())
    assert 0 <= saved["SEED"] < 2 ** 31
    assert "SEED {} (drawn at random (SEED -1))".format(saved["SEED"]) in (drawn_dir / "log.txt").read_text()
    repeated = train_seeded(workspace, workspace["dir"] / "seed_repeated", config_file=drawn_dir / "config.yml")
    assert max_weight_difference(drawn, repeated) == 0
    another = train_seeded(workspace, workspace["dir"] / "seed_drawn_again", "SEED", -1)
    assert max_weight_difference(drawn, another) > 1e-3


@pytest.mark.slow
def test_a_run_with_a_drawn_seed_resumes_with_that_seed(workspace):
    output_dir = workspace["dir"] / "seed_drawn_stopped"
    train_seeded(workspace, output_dir, "SEED", -1, "SOLVER.MAX_ITER", 2)
    drawn = yaml.safe_load((output_dir / "config.yml").read_text())["SEED"]
    resumed = train_seeded(workspace, output_dir, "SEED", -1)
    assert yaml.safe_load((output_dir / "config.yml").read_text())["SEED"] == drawn
    assert "of the interrupted run" in (output_dir / "log.txt").read_text()
    uninterrupted = train_seeded(workspace, workspace["dir"] / "seed_drawn_uninterrupted", "SEED", drawn)
    assert max_weight_difference(resumed, uninterrupted) <= 1e-6


@pytest.mark.slow
def test_test_net_reproduces_the_evaluation_run_after_training(workspace, trained):
    output_dir = workspace["dir"] / "tested"
    args = ["--config-file", TINY_CONFIG, "--ckpt", trained / "model_final.pth",
            "PATHS_CATALOG", workspace["catalog"], "OUTPUT_DIR", output_dir]
    result = run_tool("test_net.py", args, workspace["env"])
    check_ran(result)
    tested = json.loads((output_dir / "inference" / "fixture_test" / "metrics.json").read_text())
    after_training = json.loads((trained / "inference" / "fixture_test" / "metrics.json").read_text())
    assert tested == after_training


@pytest.mark.slow
@pytest.mark.parametrize("where", ["file", "command line"])
def test_unknown_config_key_is_a_one_line_error(workspace, tmp_path, where):
    config_file = tmp_path / "bad.yaml"
    if where == "file":
        config_file.write_text("MODEL:\n  DEVICE: cpu\n  NOT_A_KEY: 3\n")
        opts = []
    else:
        config_file.write_text("MODEL:\n  DEVICE: cpu\n")
        opts = ["SOLVER.NOT_A_KEY", "3"]
    result = run_tool("train_net.py", ["--config-file", config_file, *opts], workspace["env"])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()
    assert len(message) == 1
    assert "NOT_A_KEY" in message[0]
    assert (str(config_file) if where == "file" else "SOLVER.NOT_A_KEY 3") in message[0]


def load_demo_module():
    spec = importlib.util.spec_from_file_location("demo_tool", os.path.join(REPO_ROOT, "tools", "demo.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_demo_writes_a_png_of_the_input_size(workspace, trained, tmp_path):
    image_path = os.path.join(workspace["fixture"].root, "train2017", "000000000107.jpg")
    output = tmp_path / "demo.png"
    result = run_tool("demo.py", ["--config-file", TINY_CONFIG, "--ckpt", trained / "model_final.pth",
                                  "--image", image_path, "--output", output, "--confidence-threshold", "0.0",
                                  "PATHS_CATALOG", workspace["catalog"], "OUTPUT_DIR", trained,
                                  # every scored box is a detection, so that there is something to draw
                                  "MODEL.ROI_HEADS.SCORE_THRESH", "0.0"], workspace["env"])
    check_ran(result)
    with Image.open(output) as drawn, Image.open(image_path) as original:
        assert drawn.format == "PNG"
        assert drawn.size == original.size
        changed = (np.asarray(drawn.convert("RGB")) != np.asarray(original.convert("RGB"))).any()
    assert int(re.search(r"(\d+) detections above", result.stdout).group(1)) > 0
    assert changed
    # Class names from OUTPUT_DIR/labels.json, i.e. the fixture's category names.
    assert re.search(r"demo INFO: category_\d: 0\.\d{3} at \[", result.stdout)


def test_demo_draws_mask_box_and_label_colours():
    demo = load_demo_module()
    image = Image.fromarray(np.full((60, 80, 3), 100, dtype=np.uint8))
    prediction = BoxList(torch.tensor([[10.0, 10.0, 40.0, 40.0]]), image.size)
    mask = torch.zeros(1, 1, 60, 80, dtype=torch.bool)
    mask[0, 0, 30:36, 20:26] = True
    prediction.add_field("labels", torch.tensor([2]))
    prediction.add_field("scores", torch.tensor([0.9]))
    prediction.add_field("mask", mask)
    drawn = np.asarray(demo.draw_predictions(image, prediction, {2: "giraffe"}))

    # Upstream's colour of label 2: 2 * (2^25 - 1, 2^15 - 1, 2^21 - 1) modulo 255.
    colour = np.array([2 * (2 ** 25 - 1) % 255, 2 * (2 ** 15 - 1) % 255, 2 * (2 ** 21 - 1) % 255])
    np.testing.assert_array_equal(drawn[33, 23], np.round(0.5 * 100 + 0.5 * colour))  # mask overlay
    np.testing.assert_array_equal(drawn[40, 30], colour)  # bottom edge of the box
    np.testing.assert_array_equal(drawn[25, 15], [100, 100, 100])  # in the box, off the mask and label
    np.testing.assert_array_equal(drawn[50, 70], [100, 100, 100])  # outside the box
    assert (drawn[10:22, 11:45].min(axis=-1) > 200).any()  # white (anti-aliased) label text at the top-left corner


def test_demo_class_names_from_labels_json_match_the_dataset_categories(workspace, tmp_path):
    demo = load_demo_module()
    cfg = tiny_cfg(workspace["catalog"], tmp_path)
    from_dataset = demo.load_class_names(cfg)
    assert sorted(from_dataset) == list(range(1, 7))
    assert set(from_dataset.values()) == {c["name"] for c in workspace["fixture"].data["categories"]}
    make_data_loader(cfg, is_train=True)  # writes OUTPUT_DIR/labels.json as training does
    assert (tmp_path / "labels.json").is_file()
    assert demo.load_class_names(cfg) == from_dataset
