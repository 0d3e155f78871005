"""The training loop (do_train) and inference on the tiny CPU Mask R-CNN and the LVIS test fixture:
non-finite losses, skipped batches, mixed precision, checkpointed GradScaler and RNG state,
TensorBoard scalars and prediction gathering."""
import contextlib
import logging
import os
import random

import numpy as np
import pytest
import torch
from torch import nn

from fixtures_training import load_checkpoint, seed_everything, tiny_cfg, write_fixture_catalog
from maskrcnn_benchmark.data import make_data_loader
from maskrcnn_benchmark.engine.inference import inference
from maskrcnn_benchmark.engine.mixed_precision import autocast_dtype, make_grad_scaler
from maskrcnn_benchmark.engine.trainer import capture_rng_state, do_train, restore_rng_state
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.solver import make_lr_scheduler, make_optimizer
from maskrcnn_benchmark.structures.image_list import to_image_list
from maskrcnn_benchmark.utils.checkpoint import Checkpointer

@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    return write_fixture_catalog(tmp_path_factory.mktemp("lvis_fixture"))[0]


@contextlib.contextmanager
def trainer_log_messages(level=logging.INFO):
    """Collect the messages of the trainer's logger (whatever the logging set-up of the session)."""
    messages = []
    handler = logging.Handler(level)
    handler.emit = lambda record: messages.append((record.levelno, record.getMessage()))
    logger = logging.getLogger("maskrcnn_benchmark.trainer")
    previous_level = logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous_level)


class Run:
    """Model, optimizer, scheduler, checkpointer and training loader of a tiny-config run."""

    def __init__(self, catalog, output_dir, *opts, model_wrapper=None, scaler=None):
        self.cfg = tiny_cfg(catalog, output_dir, *opts)
        seed_everything(0)
        self.device = torch.device(self.cfg.MODEL.DEVICE)
        self.model = build_detection_model(self.cfg).to(self.device)
        if model_wrapper is not None:
            self.model = model_wrapper(self.model)
        self.optimizer = make_optimizer(self.cfg, self.model)
        self.scheduler = make_lr_scheduler(self.cfg, self.optimizer)
        self.scaler = scaler
        extra = {"scaler": scaler} if scaler is not None else {}
        self.checkpointer = Checkpointer(self.model, self.optimizer, self.scheduler, str(output_dir), True, **extra)
        self.arguments = {"iteration": 0}
        self.data_loader = make_data_loader(self.cfg, is_train=True, start_iter=0)

    def train(self, data_loader=None, checkpoint_period=None):
        data_loader_val = None
        if self.cfg.SOLVER.TEST_PERIOD > 0:
            data_loader_val = make_data_loader(self.cfg, is_train=False, is_for_period=True)
        do_train(
            self.cfg, self.model, data_loader or self.data_loader, data_loader_val, self.optimizer, self.scheduler,
            self.checkpointer, self.device, checkpoint_period or self.cfg.SOLVER.CHECKPOINT_PERIOD,
            self.cfg.SOLVER.TEST_PERIOD, self.arguments,
        )


class PoisonedLoss(nn.Module):
    """Wraps a detector; on its ``poisoned_call``-th training forward, loss_mask becomes NaN."""

    def __init__(self, model, poisoned_call):
        super().__init__()
        self.model = model
        self.poisoned_call = poisoned_call
        self.calls = 0

    def forward(self, images, targets=None):
        losses = self.model(images, targets)
        self.calls += 1
        if self.calls == self.poisoned_call:
            losses["loss_mask"] = losses["loss_mask"] * float("nan")
        return losses


def test_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(catalog, tmp_path):
    run = Run(catalog, tmp_path, "SOLVER.MAX_ITER", 5, model_wrapper=lambda m: PoisonedLoss(m, poisoned_call=3))
    with pytest.raises(FloatingPointError, match=r"iteration 3 \(loss_mask\)"):
        run.train(checkpoint_period=1)
    assert sorted(f for f in os.listdir(tmp_path) if f.endswith(".pth")) == ["model_0000001.pth", "model_0000002.pth"]
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_0000002.pth"
    last_good = load_checkpoint(tmp_path / "model_0000002.pth")
    assert last_good["iteration"] == 2
    # No update was applied at iteration 3: the weights are those of the last checkpoint, all finite.
    for name, value in run.model.state_dict().items():
        assert torch.isfinite(value.float()).all(), name
        assert torch.equal(value, last_good["model"][name]), name


class EmptyTargetsInLastBatch:
    """A training loader whose last batch has targets without any box."""

    def __init__(self, data_loader):
        self.data_loader = data_loader

    def __len__(self):
        return len(self.data_loader)

    def __iter__(self):
        for position, (images, targets, indices) in enumerate(self.data_loader):
            if position == len(self) - 1:
                targets = tuple(target[torch.zeros(len(target), dtype=torch.bool)] for target in targets)
            yield images, targets, indices


def test_batch_without_annotations_is_skipped_and_model_final_still_written(catalog, tmp_path):
    run = Run(catalog, tmp_path, "SOLVER.MAX_ITER", 3)
    with trainer_log_messages() as messages:
        run.train(data_loader=EmptyTargetsInLastBatch(run.data_loader), checkpoint_period=2)
    assert any(level == logging.ERROR and "Iteration 3 skipped" in message for level, message in messages)
    final = load_checkpoint(tmp_path / "model_final.pth")
    before_skip = load_checkpoint(tmp_path / "model_0000002.pth")
    assert final["iteration"] == 3
    assert (tmp_path / "last_checkpoint").read_text().strip() == "model_final.pth"
    # The skipped batch took no optimizer or scheduler step.
    assert final["scheduler"]["last_epoch"] == before_skip["scheduler"]["last_epoch"] == 2
    for name, value in before_skip["model"].items():
        assert torch.equal(final["model"][name], value), name


def test_bfloat16_autocast_trains_a_step(catalog, tmp_path):
    run = Run(catalog, tmp_path, "SOLVER.MAX_ITER", 1, "DTYPE", "bfloat16")
    conv_output_dtypes = []
    run.model.backbone.fpn.register_forward_hook(
        lambda module, inputs, outputs: conv_output_dtypes.append(outputs[0].dtype)
    )
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.train()
    assert conv_output_dtypes == [torch.bfloat16]
    after = run.model.state_dict()
    assert all(torch.isfinite(v.float()).all() for v in after.values())
    classifier = "roi_heads.box.predictor.cls_score.weight"
    assert not torch.equal(before[classifier], after[classifier])
    # Parameters stay in float32 (autocast casts per operation).
    assert after["roi_heads.box.predictor.cls_score.weight"].dtype == torch.float32


def test_float16_grad_scaler_state_round_trips_through_the_checkpoint(catalog, tmp_path):
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=1)
    run = Run(catalog, tmp_path, "SOLVER.MAX_ITER", 2, "DTYPE", "float16", scaler=scaler)
    run.train()
    trained_state = scaler.state_dict()
    assert trained_state["scale"] != 2.0 ** 10  # grown after finite steps (or backed off after overflows)
    saved = load_checkpoint(tmp_path / "model_final.pth")
    assert saved["scaler"] == trained_state

    resumed_scaler = torch.amp.GradScaler("cpu")
    resumed = Checkpointer(build_detection_model(run.cfg), save_dir=str(tmp_path), scaler=resumed_scaler)
    assert resumed.load()["iteration"] == 2
    assert resumed_scaler.state_dict() == trained_state


def _c_has_cuda_kernels():
    from maskrcnn_benchmark import _C

    return bool(_C.compiled_with_cuda)


@pytest.mark.skipif(not torch.cuda.is_available() or not _c_has_cuda_kernels(),
                    reason="needs a CUDA GPU and _C built with CUDA kernels")
def test_float16_on_cuda_trains_with_loss_scaling(catalog, tmp_path):
    # GradScaler starts at 2**16 and skips the steps whose float16 gradients overflow while it
    # halves the scale, so a few iterations are needed before the weights move.
    scaler = make_grad_scaler("float16", "cuda")
    initial_scale = scaler.get_scale()
    run = Run(catalog, tmp_path, "SOLVER.MAX_ITER", 12, "DTYPE", "float16", "MODEL.DEVICE", "cuda", scaler=scaler)
    before = run.model.roi_heads.box.predictor.cls_score.weight.detach().clone()
    run.train()
    after = run.model.roi_heads.box.predictor.cls_score.weight.detach()
    assert torch.isfinite(after).all() and not torch.equal(before, after)
    assert 0 < scaler.get_scale() <= initial_scale
    assert load_checkpoint(tmp_path / "model_final.pth")["scaler"] == scaler.state_dict()


def test_grad_scaler_only_for_float16():
    assert isinstance(make_grad_scaler("float16", "cpu"), torch.amp.GradScaler)
    assert make_grad_scaler("bfloat16", "cpu") is None
    assert make_grad_scaler("float32", "cpu") is None
    with pytest.raises(ValueError, match="DTYPE 'half'.*float32, float16, bfloat16"):
        autocast_dtype("half")


def test_tensorboard_scalars_log_line_and_periodic_validation(catalog, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = Run(catalog, tmp_path, "SOLVER.MAX_ITER", 3, "SOLVER.TEST_PERIOD", 2, "TENSORBOARD_EXPERIMENT", "tb")
    with trainer_log_messages() as messages:
        run.train()
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    losses = events.Scalars("train/loss")
    assert [e.step for e in losses] == [1, 2, 3]
    assert all(np.isfinite(e.value) and e.value > 0 for e in losses)
    assert {"train/loss_mask", "train/loss_objectness", "train/lr"} <= set(events.Tags()["scalars"])
    # The LR logged at iteration 1 is the warmup LR the first step used: BASE_LR / 3.
    assert events.Scalars("train/lr")[0].value == pytest.approx(run.cfg.SOLVER.BASE_LR * (1 / 3 * 0.5 + 0.5))

    final_line = [message for _, message in messages if "iter: 3" in message]
    assert len(final_line) == 1
    for part in ("eta: ", "loss: ", "loss_classifier: ", "loss_mask: ", "lr: ", "max mem: "):
        assert part in final_line[0]

    # TEST_PERIOD 2: one validation at iteration 2 (inference, then the losses on the validation set).
    validation = [message for _, message in messages if message.startswith("[Validation]")]
    assert len(validation) == 1 and "iter: 2" in validation[0] and "loss_mask: " in validation[0]
    assert [e.step for e in events.Scalars("validation/loss")] == [2]

    # Validating leaves the training's random draws alone: the same run without it ends identically.
    without_validation = Run(catalog, tmp_path / "without_validation", "SOLVER.MAX_ITER", 3)
    without_validation.train()
    for name, value in without_validation.model.state_dict().items():
        assert torch.equal(run.model.state_dict()[name], value), name


def test_rng_state_round_trips_through_a_weights_only_checkpoint(tmp_path):
    state = capture_rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(3))
    torch.save(state, tmp_path / "rng.pth")
    seed_everything(123)
    restore_rng_state(torch.load(tmp_path / "rng.pth", weights_only=True))
    replayed = (random.random(), np.random.rand(), torch.rand(3))
    assert replayed[:2] == expected[:2]
    assert torch.equal(replayed[2], expected[2])


class ReversedBatches:
    """A test loader yielding its batches in reverse order (as another process's share might come)."""

    def __init__(self, data_loader):
        self.data_loader = data_loader
        self.dataset = data_loader.dataset

    def __iter__(self):
        return iter(list(self.data_loader)[::-1])

    def __len__(self):
        return len(self.data_loader)


def test_inference_saves_predictions_in_dataset_order(catalog, tmp_path):
    cfg = tiny_cfg(catalog, tmp_path, "MODEL.ROI_HEADS.DETECTIONS_PER_IMG", 5)
    torch.manual_seed(0)
    model = build_detection_model(cfg).eval()
    data_loader = make_data_loader(cfg, is_train=False)[0]
    dataset = data_loader.dataset
    results = inference(model, ReversedBatches(data_loader), "fixture_test", iou_types=("bbox", "segm"),
                        device="cpu", output_folder=str(tmp_path))
    assert results is not None
    saved = torch.load(tmp_path / "predictions.pth", weights_only=False)
    assert len(saved) == len(dataset)
    with torch.no_grad():
        for index in range(len(dataset)):
            image = to_image_list(dataset[index][0], cfg.DATALOADER.SIZE_DIVISIBILITY)
            expected = model(image)[0]
            assert saved[index].size == expected.size
            # Batched and single-image convolutions may differ in the last bits.
            torch.testing.assert_close(saved[index].bbox, expected.bbox, atol=1e-3, rtol=1e-4)
            torch.testing.assert_close(
                saved[index].get_field("scores"), expected.get_field("scores"), atol=1e-5, rtol=1e-4
            )
