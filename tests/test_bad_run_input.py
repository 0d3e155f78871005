"""Bad checkpoints, resumes, configs, command lines and class counts, one at a time, each on
files the test writes: a one-line error naming the file (or key), the cause and the fix, or a
logged warning; never a silent fresh start or a silently ignored setting."""
import argparse
import datetime
import errno
import logging
import os
import random

import pytest
import torch
from torch import nn

from fixtures_data import write_lvis_fixture
from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.data import check_num_classes
from maskrcnn_benchmark.data.datasets import LVISDataset
from maskrcnn_benchmark.engine.cli import add_common_arguments, load_config, parse_arguments
from maskrcnn_benchmark.engine.resume import check_start_iteration, non_finite_loss_message
from maskrcnn_benchmark.solver import make_lr_scheduler, make_optimizer
from maskrcnn_benchmark.utils import miscellaneous
from maskrcnn_benchmark.utils.checkpoint import Checkpointer
from maskrcnn_benchmark.utils.model_serialization import CheckpointFileError, load_torch_file


def one_line(message):
    assert "\n" not in message, message
    return message


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))


def solver_cfg(**solver):
    cfg = default_cfg.clone()
    for key, value in solver.items():
        setattr(cfg.SOLVER, key, value)
    return cfg


def trained_checkpointer(save_dir, cfg, iterations):
    """A checkpointer whose optimizer and scheduler have run ``iterations`` steps."""
    model = tiny_model()
    optimizer = make_optimizer(cfg, model)
    scheduler = make_lr_scheduler(cfg, optimizer)
    for _ in range(iterations):
        optimizer.zero_grad()
        model(torch.ones(1, 2)).sum().backward()
        optimizer.step()
        scheduler.step()
    return Checkpointer(model, optimizer, scheduler, save_dir=save_dir, save_to_disk=True)


# ----------------------------------------------------------------------------- checkpoint files
@pytest.mark.parametrize("corrupt, cause", [
    (lambda b: b[:len(b) // 2], "truncated or corrupt"),
    (lambda b: b"\x42" + random.Random(0).randbytes(len(b) - 1), "not a PyTorch checkpoint"),
    (lambda b: b"\x80" + random.Random(1).randbytes(len(b) - 1), "truncated or corrupt"),
    (lambda b: b"", "truncated or corrupt"),
], ids=["truncated", "random_bytes", "random_bytes_after_a_pickle_mark", "empty"])
# torch warns about the random "protocol" byte after the pickle mark before it fails on the rest
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_corrupt_checkpoint_names_path_and_cause(tmp_path, corrupt, cause):
    run = str(tmp_path)
    trained_checkpointer(run, solver_cfg(), 1).save("model_0000001")
    path = os.path.join(run, "model_0000001.pth")
    with open(path, "rb") as f:
        content = f.read()
    with open(path, "wb") as f:
        f.write(corrupt(content))
    with pytest.raises(CheckpointFileError) as error:
        Checkpointer(tiny_model(), save_dir=run).load()
    message = one_line(str(error.value))
    assert message.startswith(path) and cause in message
    assert "weights_only" not in message  # not misdiagnosed as a file with Python objects
    assert "last_checkpoint" in message  # the fix: resume from an earlier checkpoint
    # The same file given as weights to start from (MODEL.WEIGHT), where Python objects are refused.
    with pytest.raises(CheckpointFileError) as error:
        load_torch_file(path)
    message = one_line(str(error.value))
    assert message.startswith(path) and cause in message and "weights_only" not in message


def test_full_disk_at_checkpoint_time(tmp_path, monkeypatch):
    run = str(tmp_path)
    checkpointer = trained_checkpointer(run, solver_cfg(), 1)
    checkpointer.save("model_0000001")

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        def __getattr__(self, name):
            return getattr(self.f, name)

    real_save = torch.save
    monkeypatch.setattr(miscellaneous.torch, "save", lambda obj, f: real_save(obj, FullDisk(f)))
    with pytest.raises(OSError) as error:
        checkpointer.save("model_0000002")
    message = one_line(str(error.value))
    assert os.path.join(run, "model_0000002.pth") in message
    assert "No space left on device" in message
    assert "previous checkpoint {} is intact".format(os.path.join(run, "model_0000001.pth")) in message
    monkeypatch.undo()
    # Atomic: no partial file, and the tag still names the previous checkpoint.
    assert sorted(os.listdir(run)) == ["last_checkpoint", "model_0000001.pth"]
    assert Checkpointer(tiny_model(), save_dir=run).get_checkpoint_file() == \
        os.path.join(run, "model_0000001.pth")


@pytest.mark.parametrize("content, state", [(b"", "empty"), (b"\n  \n", "empty"),
                                            (b"\xff\xfe\x00garbage", "garbled")])
def test_empty_or_garbled_last_checkpoint_is_an_error(tmp_path, content, state):
    (tmp_path / "last_checkpoint").write_bytes(content)
    with pytest.raises(ValueError) as error:
        Checkpointer(tiny_model(), save_dir=str(tmp_path)).load("weights.pth")
    message = one_line(str(error.value))
    assert message.startswith(str(tmp_path / "last_checkpoint") + " is " + state)
    assert "delete it to start training afresh" in message


# ----------------------------------------------------------------------------- resuming
def test_resume_applies_the_configs_solver_settings(tmp_path, caplog):
    run = str(tmp_path)
    old = solver_cfg(BASE_LR=0.02, STEPS=(8,), WARMUP_ITERS=2)
    trained_checkpointer(run, old, 5).save("model_0000005")

    new = solver_cfg(BASE_LR=0.005, STEPS=(6,), WARMUP_ITERS=2)
    resumed = trained_checkpointer(run, new, 0)
    with caplog.at_level(logging.WARNING):
        resumed.load()
    # What a run with the new config would have at iteration 5.
    reference = trained_checkpointer(str(tmp_path / "ref"), new, 5)
    assert [g["lr"] for g in resumed.optimizer.param_groups] == \
        pytest.approx([g["lr"] for g in reference.optimizer.param_groups])
    for _ in range(3):
        resumed.scheduler.step()
        reference.scheduler.step()
        assert resumed.scheduler.get_last_lr() == pytest.approx(reference.scheduler.get_last_lr())
    assert resumed.scheduler.last_epoch == 8
    warning = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warning) == 1
    assert "SOLVER.BASE_LR" in warning[0] and "SOLVER.STEPS: checkpoint [8], config [6]" in warning[0]


def test_resume_with_the_same_config_changes_nothing(tmp_path, caplog):
    run = str(tmp_path)
    cfg = solver_cfg(BASE_LR=0.02, STEPS=(3,), WARMUP_ITERS=2)
    saved = trained_checkpointer(run, cfg, 4)
    saved.save("model_0000004")
    resumed = trained_checkpointer(run, cfg, 0)
    with caplog.at_level(logging.WARNING):
        resumed.load()
    assert [g["lr"] for g in resumed.optimizer.param_groups] == \
        [g["lr"] for g in saved.optimizer.param_groups]
    assert "differ from the checkpoint" not in caplog.text


def test_rerun_past_max_iter_says_so(tmp_path, caplog):
    run = str(tmp_path)
    trained_checkpointer(run, solver_cfg(), 1).save("model_0000100")
    with pytest.raises(ValueError) as error:
        check_start_iteration(100, 60, run)
    message = one_line(str(error.value))
    assert os.path.join(run, "model_0000100.pth") in message and "past SOLVER.MAX_ITER 60" in message
    assert "set SOLVER.MAX_ITER above 100" in message and "new OUTPUT_DIR" in message
    with caplog.at_level(logging.WARNING):
        check_start_iteration(100, 100, run)
    assert "training is already finished" in caplog.text


def test_non_finite_loss_message_names_the_checkpoint_that_exists(tmp_path):
    without = one_line(non_finite_loss_message(7, "loss_classifier", str(tmp_path)))
    assert "no checkpoint has been written in {}".format(tmp_path) in without
    assert "starts afresh" in without and "last good state" not in without
    trained_checkpointer(str(tmp_path), solver_cfg(), 1).save("model_0000005")
    with_one = one_line(non_finite_loss_message(7, "loss_classifier", str(tmp_path)))
    assert "last checkpoint written, {}, is the last good state".format(tmp_path / "model_0000005.pth") in with_one
    assert "lower SOLVER.BASE_LR" in with_one


# ----------------------------------------------------------------------------- config and CLI
def _load(config_file, opts=()):
    cfg = default_cfg.clone()
    with pytest.raises(SystemExit) as error:
        load_config(cfg, str(config_file), list(opts))
    return one_line(str(error.value))


def test_yaml_syntax_error_keeps_file_line_and_column(tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("MODEL:\n  DEVICE: cpu\nSOLVER:\n  STEPS: [10, 20\n  BASE_LR: 0.1\n")
    message = _load(config)
    assert str(config) in message and "line 5, column 10" in message


@pytest.mark.parametrize("key, value", [("SOLVER.MAX_ITER", "-3"), ("SOLVER.IMS_PER_BATCH", "0"),
                                        ("TEST.IMS_PER_BATCH", "-1"), ("INPUT.MIN_SIZE_TRAIN", "(600, 0)"),
                                        ("DATALOADER.NUM_WORKERS", "-2")])
def test_non_positive_counts_fail_at_merge_time_with_the_key(tmp_path, key, value):
    config = tmp_path / "ok.yaml"
    config.write_text("MODEL:\n  DEVICE: cpu\n")
    message = _load(config, [key, value])
    assert "{} is ".format(key) in message and ("positive" in message or "zero or more" in message)
    assert "e.g. {} ".format(key) in message


@pytest.mark.parametrize("key, value", [("SEED", "-2"), ("DATALOADER.SEED", str(2 ** 31))])
def test_seeds_out_of_range_fail_at_merge_time_with_the_key(tmp_path, key, value):
    config = tmp_path / "ok.yaml"
    config.write_text("MODEL:\n  DEVICE: cpu\n")
    message = _load(config, [key, value])
    assert "{} is {}".format(key, value) in message and "-1 or in [0, 2^31)" in message


def test_flags_before_or_after_the_overrides():
    parser = argparse.ArgumentParser()
    add_common_arguments(parser)
    parser.add_argument("--skip-test", action="store_true")
    for argv in (["--config-file", "a.yaml", "--skip-test", "SOLVER.MAX_ITER", "10"],
                 ["--config-file", "a.yaml", "SOLVER.MAX_ITER", "10", "--skip-test"],
                 ["SOLVER.MAX_ITER", "10", "--skip-test", "--config-file", "a.yaml"]):
        args = parse_arguments(parser, argv)
        assert (args.config_file, args.skip_test, args.opts) == ("a.yaml", True, ["SOLVER.MAX_ITER", "10"])
    # A value that happens to look like a flag stays a value.
    assert parse_arguments(parser, ["OUTPUT_DIR", "--skip-test"]).opts == ["OUTPUT_DIR", "--skip-test"]


# ----------------------------------------------------------------------------- class count
def test_num_classes_is_checked_against_the_dataset(tmp_path):
    fixture = write_lvis_fixture(str(tmp_path), num_images=4)
    dataset = LVISDataset(fixture.ann_file, fixture.root, True)
    num_categories = len(fixture.data["categories"])
    cfg = default_cfg.clone()
    cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = num_categories + 1
    check_num_classes(cfg, [dataset], ["lvis_fixture_train"])
    for wrong in (num_categories - 2, num_categories + 5):
        cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES = wrong
        with pytest.raises(ValueError) as error:
            check_num_classes(cfg, [dataset], ["lvis_fixture_train"])
        message = one_line(str(error.value))
        assert "'lvis_fixture_train' has {} categories".format(num_categories) in message
        assert "set MODEL.ROI_BOX_HEAD.NUM_CLASSES {}".format(num_categories + 1) in message


@pytest.mark.parametrize("write_weights, cause", [
    (lambda path: path.write_bytes(b"\x80" + random.Random(2).randbytes(2047)), "truncated or corrupt"),
    (lambda path: torch.save({"model": {}, "started": datetime.date(2020, 6, 1)}, path),
     "holds Python objects"),
], ids=["random_bytes_after_a_pickle_mark", "python_objects"])
@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
def test_train_net_exits_with_one_line_on_an_unreadable_weight_file(workspace, tmp_path, write_weights, cause):
    """The command line: no traceback, one line naming the tool, the file and the cause."""
    from fixtures_training import TINY_CONFIG, run_tool

    weights = tmp_path / "weights.pth"
    write_weights(weights)
    result = run_tool("train_net.py", ["--config-file", TINY_CONFIG, "PATHS_CATALOG", workspace["catalog"],
                                       "OUTPUT_DIR", tmp_path / "out", "MODEL.WEIGHT", weights, "SOLVER.MAX_ITER", 1],
                      workspace["env"])
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith("train_net.py: error: ") and str(weights) in last_line and cause in last_line
