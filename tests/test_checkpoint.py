"""Checkpointer, DetectronCheckpointer, load_state_dict and cache_url.

The first tests are upstream's tests/checkpoint.py cases; the rest cover atomic saving, relative
last_checkpoint tags, extra state, weights_only loading, shape-mismatch errors and downloading.
"""
import datetime
import hashlib
import io
import os
import shutil
import urllib.error
from collections import OrderedDict

import pytest
import torch
import torch.hub
import torchvision
from torch import nn

from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.utils.checkpoint import Checkpointer, DetectronCheckpointer
from maskrcnn_benchmark.utils.model_serialization import (
    CheckpointFileError,
    align_and_update_state_dicts,
    load_state_dict,
    strip_prefix_if_present,
)
from maskrcnn_benchmark.utils.model_zoo import cache_url, default_model_dir


def create_model():
    return nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))


def create_complex_model():
    model = nn.Module()
    model.block1 = nn.Module()
    model.block1.layer1 = nn.Linear(2, 3)
    model.layer2 = nn.Linear(3, 2)
    model.res = nn.Module()
    model.res.layer2 = nn.Linear(3, 2)
    state_dict = OrderedDict()
    state_dict["layer1.weight"] = torch.rand(3, 2)
    state_dict["layer1.bias"] = torch.rand(3)
    state_dict["layer2.weight"] = torch.rand(2, 3)
    state_dict["layer2.bias"] = torch.rand(2)
    state_dict["res.layer2.weight"] = torch.rand(2, 3)
    state_dict["res.layer2.bias"] = torch.rand(2)
    return model, state_dict


def maybe_data_parallel(model, wrap):
    return nn.DataParallel(model) if wrap else model


def assert_same_parameters(expected_model, model):
    expected, actual = list(expected_model.parameters()), list(model.parameters())
    assert len(expected) == len(actual) > 0
    for expected_p, actual_p in zip(expected, actual):
        assert expected_p is not actual_p
        assert torch.equal(expected_p, actual_p)


DATA_PARALLEL_CASES = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize("wrap_trained, wrap_fresh", DATA_PARALLEL_CASES)
def test_resume_from_last_checkpoint(tmp_path, wrap_trained, wrap_fresh):
    trained = maybe_data_parallel(create_model(), wrap_trained)
    fresh = maybe_data_parallel(create_model(), wrap_fresh)
    Checkpointer(trained, save_dir=str(tmp_path), save_to_disk=True).save("checkpoint_file")

    fresh_checkpointer = Checkpointer(fresh, save_dir=str(tmp_path))
    assert fresh_checkpointer.has_checkpoint()
    assert fresh_checkpointer.get_checkpoint_file() == os.path.join(str(tmp_path), "checkpoint_file.pth")
    assert fresh_checkpointer.load() == {}
    assert_same_parameters(trained, fresh)


@pytest.mark.parametrize("wrap_trained, wrap_fresh", DATA_PARALLEL_CASES)
def test_load_named_file_from_another_folder(tmp_path, wrap_trained, wrap_fresh):
    trained = maybe_data_parallel(create_model(), wrap_trained)
    fresh = maybe_data_parallel(create_model(), wrap_fresh)
    Checkpointer(trained, save_dir=str(tmp_path / "a"), save_to_disk=True).save("checkpoint_file")

    fresh_checkpointer = Checkpointer(fresh, save_dir=str(tmp_path / "b"))
    assert not fresh_checkpointer.has_checkpoint()
    assert fresh_checkpointer.get_checkpoint_file() == ""
    fresh_checkpointer.load(str(tmp_path / "a" / "checkpoint_file.pth"))
    assert_same_parameters(trained, fresh)


@pytest.mark.parametrize("add_data_parallel", [False, True])
def test_complex_model_loaded(add_data_parallel):
    model, state_dict = create_complex_model()
    model = maybe_data_parallel(model, add_data_parallel)
    load_state_dict(model, state_dict)
    for loaded, stored in zip(model.state_dict().values(), state_dict.values()):
        assert loaded is not stored
        assert torch.equal(loaded, stored)


def make_nested_backbone():
    """Parameter names as in the detector: backbone.body.stem.{conv1,bn1}, backbone.body.layer1.0.*."""
    body = nn.Module()
    body.stem = nn.Module()
    body.stem.conv1 = nn.Conv2d(3, 4, 1, bias=False)
    body.stem.bn1 = nn.BatchNorm2d(4)
    block = nn.Module()
    block.conv1 = nn.Conv2d(4, 4, 1, bias=False)
    block.bn1 = nn.BatchNorm2d(4)
    body.layer1 = nn.Sequential(block)
    model = nn.Module()
    model.backbone = nn.Module()
    model.backbone.body = body
    model.backbone.xconv1 = nn.Conv2d(3, 4, 1, bias=False)  # ends with "conv1.weight", but not at a "."
    return model


def test_longest_suffix_at_name_boundary_wins():
    model = make_nested_backbone()
    initial = {key: value.clone() for key, value in model.state_dict().items()}
    loaded = {
        "conv1.weight": torch.randn(4, 3, 1, 1),
        "bn1.weight": torch.rand(4),
        "bn1.bias": torch.rand(4),
        "layer1.0.conv1.weight": torch.randn(4, 4, 1, 1),
        "layer1.0.bn1.weight": torch.rand(4),
        "layer1.0.bn1.bias": torch.rand(4),
        "fc.weight": torch.randn(10, 4),
    }
    mapping = align_and_update_state_dicts(model.state_dict(), loaded)
    assert mapping == {
        "backbone.body.stem.conv1.weight": "conv1.weight",
        "backbone.body.stem.bn1.weight": "bn1.weight",
        "backbone.body.stem.bn1.bias": "bn1.bias",
        "backbone.body.layer1.0.conv1.weight": "layer1.0.conv1.weight",
        "backbone.body.layer1.0.bn1.weight": "layer1.0.bn1.weight",
        "backbone.body.layer1.0.bn1.bias": "layer1.0.bn1.bias",
    }

    load_state_dict(model, loaded)
    state = model.state_dict()
    for model_key, loaded_key in mapping.items():
        assert torch.equal(state[model_key], loaded[loaded_key])
    for unmatched in ("backbone.xconv1.weight", "backbone.body.stem.bn1.running_mean",
                      "backbone.body.layer1.0.bn1.running_var"):
        assert torch.equal(state[unmatched], initial[unmatched])


def test_strip_prefix_if_present():
    tensor = torch.zeros(1)
    stripped = strip_prefix_if_present(OrderedDict([("module.a", tensor), ("module.b.module.c", tensor)]), "module.")
    assert list(stripped) == ["a", "b.module.c"]
    mixed = OrderedDict([("module.a", tensor), ("b", tensor)])
    assert strip_prefix_if_present(mixed, "module.") is mixed


def train_steps(model, optimizer, scheduler, steps, seed):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        loss = model(torch.randn(4, 2, generator=generator)).square().sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def make_training_state(model):
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 4], gamma=0.1)
    return optimizer, scheduler


def test_optimizer_scheduler_restored_and_iteration_returned(tmp_path):
    model = create_model()
    optimizer, scheduler = make_training_state(model)
    train_steps(model, optimizer, scheduler, steps=3, seed=0)
    Checkpointer(model, optimizer, scheduler, str(tmp_path), save_to_disk=True).save("model_0000003", iteration=3)

    resumed = create_model()
    resumed_optimizer, resumed_scheduler = make_training_state(resumed)
    extra = Checkpointer(resumed, resumed_optimizer, resumed_scheduler, str(tmp_path)).load()

    assert extra == {"iteration": 3}
    assert resumed_scheduler.last_epoch == 3
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    # resuming continues training exactly as the uninterrupted run does (momentum buffers included)
    train_steps(model, optimizer, scheduler, steps=2, seed=1)
    train_steps(resumed, resumed_optimizer, resumed_scheduler, steps=2, seed=1)
    assert_same_parameters(model, resumed)
    assert resumed_optimizer.param_groups[0]["lr"] == pytest.approx(optimizer.param_groups[0]["lr"])


class SamplerPosition:
    """Stand-in for a sampler that can resume mid-epoch."""

    def __init__(self, start=0):
        self.start = start

    def state_dict(self):
        return {"start": self.start}

    def load_state_dict(self, state):
        self.start = state["start"]


def test_extra_checkpointables_saved_and_restored(tmp_path):
    model = create_model()
    Checkpointer(model, save_dir=str(tmp_path), save_to_disk=True,
                 scaler=torch.amp.GradScaler("cpu", init_scale=1024.0),
                 sampler=SamplerPosition(17)).save("model_final", iteration=5)

    scaler, sampler = torch.amp.GradScaler("cpu"), SamplerPosition()
    extra = Checkpointer(create_model(), save_dir=str(tmp_path), scaler=scaler, sampler=sampler).load()
    assert extra == {"iteration": 5}
    assert scaler.get_scale() == 1024.0
    assert sampler.start == 17


def test_extra_checkpointable_missing_from_checkpoint_keeps_its_state(tmp_path):
    Checkpointer(create_model(), save_dir=str(tmp_path), save_to_disk=True).save("model_final")
    sampler = SamplerPosition(3)
    assert Checkpointer(create_model(), save_dir=str(tmp_path), sampler=sampler).load() == {}
    assert sampler.start == 3


def test_bad_extra_checkpointables_are_rejected(tmp_path):
    with pytest.raises(TypeError, match="extra checkpointable 'sampler' .* needs state_dict"):
        Checkpointer(create_model(), sampler=object())
    checkpointer = Checkpointer(create_model(), save_dir=str(tmp_path), save_to_disk=True,
                                sampler=SamplerPosition())
    with pytest.raises(ValueError, match=r"\['model', 'sampler'\] would overwrite"):
        checkpointer.save("model_final", sampler=1, model=2)


def crash_halfway_through_torch_save(monkeypatch):
    real_save = torch.save

    def save_half_then_fail(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", save_half_then_fail)


def test_crash_during_save_leaves_previous_checkpoint_and_tag(tmp_path, monkeypatch):
    model = create_model()
    saved = create_model()
    saved.load_state_dict(model.state_dict())
    checkpointer = Checkpointer(model, save_dir=str(tmp_path), save_to_disk=True)
    checkpointer.save("model_0000001", iteration=1)
    files_before = {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)}

    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    crash_halfway_through_torch_save(monkeypatch)
    for name in ("model_0000002", "model_0000001"):  # a new file, then overwriting the tagged one
        with pytest.raises(OSError, match="No space left on device"):
            checkpointer.save(name, iteration=2)
    monkeypatch.undo()

    assert {name: (tmp_path / name).read_bytes() for name in os.listdir(tmp_path)} == files_before
    resumed = create_model()
    assert Checkpointer(resumed, save_dir=str(tmp_path)).load() == {"iteration": 1}
    assert_same_parameters(saved, resumed)


def test_tag_is_relative_so_a_moved_output_folder_resumes(tmp_path):
    trained = create_model()
    Checkpointer(trained, save_dir=str(tmp_path / "run"), save_to_disk=True).save("model_final")
    assert (tmp_path / "run" / "last_checkpoint").read_text() == "model_final.pth"

    shutil.move(str(tmp_path / "run"), str(tmp_path / "moved"))
    resumed = create_model()
    Checkpointer(resumed, save_dir=str(tmp_path / "moved")).load()
    assert_same_parameters(trained, resumed)


def test_upstream_absolute_tag_is_read_even_after_a_move(tmp_path):
    trained = create_model()
    run = tmp_path / "run"
    Checkpointer(trained, save_dir=str(run), save_to_disk=True).save("model_0000100")
    (run / "last_checkpoint").write_text(str(run / "model_0000100.pth"))  # as upstream wrote it
    assert Checkpointer(create_model(), save_dir=str(run)).get_checkpoint_file() == str(run / "model_0000100.pth")

    shutil.move(str(run), str(tmp_path / "moved"))
    resumed = create_model()
    checkpointer = Checkpointer(resumed, save_dir=str(tmp_path / "moved"))
    assert checkpointer.get_checkpoint_file() == os.path.join(str(tmp_path / "moved"), "model_0000100.pth")
    checkpointer.load()
    assert_same_parameters(trained, resumed)


def test_no_checkpoint_leaves_model_untouched(tmp_path):
    model = create_model()
    before = [p.clone() for p in model.parameters()]
    assert Checkpointer(model, save_dir=str(tmp_path)).load() == {}
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_missing_files_are_named_with_the_fix(tmp_path):
    checkpointer = Checkpointer(create_model(), save_dir=str(tmp_path), save_to_disk=True)
    with pytest.raises(FileNotFoundError, match="nope.pth does not exist. Check MODEL.WEIGHT"):
        checkpointer.load(str(tmp_path / "elsewhere" / "nope.pth"))

    checkpointer.save("model_0000010")
    os.remove(tmp_path / "model_0000010.pth")
    with pytest.raises(FileNotFoundError, match="last_checkpoint names .*model_0000010.pth, which does not exist"):
        checkpointer.load("catalog://ImageNetPretrained/MSRA/R-50")


def make_predictor_model(num_classes):
    model = nn.Module()
    model.roi_heads = nn.Module()
    model.roi_heads.box = nn.Module()
    model.roi_heads.box.feature_extractor = nn.Linear(8, 8)
    model.roi_heads.box.predictor = nn.Module()
    model.roi_heads.box.predictor.cls_score = nn.Linear(8, num_classes)
    model.roi_heads.box.predictor.bbox_pred = nn.Linear(8, 4 * num_classes)
    return model


def test_shape_mismatch_names_keys_shapes_and_fix(tmp_path):
    trained = make_predictor_model(81)
    Checkpointer(trained, save_dir=str(tmp_path), save_to_disk=True).save("model_final")
    model = make_predictor_model(11)
    before = {key: value.clone() for key, value in model.state_dict().items()}

    with pytest.raises(RuntimeError) as error:
        Checkpointer(model).load(str(tmp_path / "model_final.pth"))
    message = str(error.value)
    assert "model roi_heads.box.predictor.cls_score.weight (11, 8) <- checkpoint " \
           "roi_heads.box.predictor.cls_score.weight (81, 8)" in message
    assert "roi_heads.box.predictor.bbox_pred.bias (44,)" in message and "(324,)" in message
    assert "set MODEL.ROI_BOX_HEAD.NUM_CLASSES to 81" in message and "trim the predictor" in message
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())

    # following the advice: without the predictor entries, the rest loads and the predictor keeps its init
    checkpoint = torch.load(tmp_path / "model_final.pth", weights_only=True)
    checkpoint["model"] = {key: value for key, value in checkpoint["model"].items()
                           if not key.startswith("roi_heads.box.predictor.")}
    torch.save(checkpoint, tmp_path / "trimmed.pth")
    Checkpointer(model).load(str(tmp_path / "trimmed.pth"))
    state = model.state_dict()
    assert torch.equal(state["roi_heads.box.feature_extractor.weight"],
                       trained.roi_heads.box.feature_extractor.weight)
    assert torch.equal(state["roi_heads.box.predictor.cls_score.weight"],
                       before["roi_heads.box.predictor.cls_score.weight"])


def test_python_objects_load_only_from_own_checkpoints(tmp_path):
    own = Checkpointer(create_model(), save_dir=str(tmp_path / "run"), save_to_disk=True)
    own.save("model_final", started=datetime.date(2020, 6, 1))
    assert Checkpointer(create_model(), save_dir=str(tmp_path / "run")).load() == {
        "started": datetime.date(2020, 6, 1)}

    with pytest.raises(CheckpointFileError, match="model_final.pth holds Python objects .* weights_only=False"):
        Checkpointer(create_model(), save_dir=str(tmp_path / "other")).load(
            str(tmp_path / "run" / "model_final.pth"))


def test_bare_torchvision_state_dict_loads_into_nested_backbone(tmp_path):
    source = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        for tensor in source.state_dict().values():
            if tensor.is_floating_point():
                tensor.copy_(torch.randn_like(tensor))
    torch.save(source.state_dict(), tmp_path / "resnet18.pth")

    body = nn.Module()
    body.stem = nn.Module()
    body.stem.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
    body.stem.bn1 = nn.BatchNorm2d(64)
    body.layer1 = torchvision.models.resnet18(weights=None).layer1
    body.layer2 = torchvision.models.resnet18(weights=None).layer2
    detector = nn.Module()
    detector.backbone = nn.Module()
    detector.backbone.body = body

    extra = DetectronCheckpointer(default_cfg, detector, save_dir=str(tmp_path / "out")).load(
        tmp_path / "resnet18.pth")  # os.PathLike works too
    assert extra == {}
    expected = source.state_dict()
    for key, value in detector.state_dict().items():
        torchvision_key = key.replace("backbone.body.", "").replace("stem.", "")
        if key.endswith("num_batches_tracked"):
            continue  # dropped by the conversion: a frozen body has no use for it
        if key.endswith("running_var"):
            # torchvision's BatchNorm eps (1e-5) is folded into the statistics for FrozenBatchNorm2d (eps 0)
            torch.testing.assert_close(value, expected[torchvision_key] + 1e-5, rtol=0, atol=1e-6)
        else:
            assert torch.equal(value, expected[torchvision_key]), key


def test_torch_model_zoo_directory_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.delenv("TORCH_MODEL_ZOO", raising=False)
    assert default_model_dir() == str(tmp_path / "home" / ".torch" / "models")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    assert default_model_dir() == str(tmp_path / "torch_home" / "models")
    monkeypatch.setenv("TORCH_MODEL_ZOO", str(tmp_path / "zoo"))
    assert default_model_dir() == str(tmp_path / "zoo")


def refuse_network(monkeypatch):
    def no_network(url, *args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)


def test_download_without_network_explains_the_fix(tmp_path, monkeypatch):
    refuse_network(monkeypatch)
    url = "https://dl.fbaipublicfiles.com/detectron/ImageNetPretrained/MSRA/R-50.pkl"
    with pytest.raises(RuntimeError, match=r"Could not download https://dl\.fbaipublicfiles\.com/detectron/"
                                           r"ImageNetPretrained/MSRA/R-50\.pkl .*name resolution.*"
                                           r"set MODEL\.WEIGHT to its local path"):
        cache_url(url, model_dir=str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_detectron_checkpointer_url_without_network(tmp_path, monkeypatch):
    refuse_network(monkeypatch)
    monkeypatch.setenv("TORCH_MODEL_ZOO", str(tmp_path / "zoo"))
    checkpointer = DetectronCheckpointer(default_cfg, create_model(), save_dir=str(tmp_path / "out"))
    with pytest.raises(RuntimeError, match=r"download https://download\.pytorch\.org/models/maskrcnn/"
                                           r"e2e_mask_rcnn_R_50_FPN_1x\.pth .*MODEL\.WEIGHT"):
        checkpointer.load("https://download.pytorch.org/models/maskrcnn/e2e_mask_rcnn_R_50_FPN_1x.pth")


def test_cache_url_downloads_once_and_checks_the_hash(tmp_path, monkeypatch):
    payload = io.BytesIO()
    torch.save({"model": create_model().state_dict()}, payload)
    digest = hashlib.sha256(payload.getvalue()).hexdigest()
    source = tmp_path / "remote" / f"weights-{digest[:8]}.pth"
    source.parent.mkdir()
    source.write_bytes(payload.getvalue())

    cached = cache_url(source.as_uri(), model_dir=str(tmp_path / "cache"), progress=False)
    assert cached == str(tmp_path / "cache" / source.name)
    assert (tmp_path / "cache" / source.name).read_bytes() == payload.getvalue()

    refuse_network(monkeypatch)  # a second call must not download again
    assert cache_url(source.as_uri(), model_dir=str(tmp_path / "cache")) == cached
    monkeypatch.undo()

    corrupt = tmp_path / "remote" / "weights-00000000.pth"
    corrupt.write_bytes(payload.getvalue())
    with pytest.raises(RuntimeError, match="Could not download .*weights-00000000.pth.*invalid hash value"):
        cache_url(corrupt.as_uri(), model_dir=str(tmp_path / "cache"), progress=False)
    assert not (tmp_path / "cache" / corrupt.name).exists()


def test_detectron_model_final_pkl_is_cached_under_its_url_path(tmp_path):
    source = tmp_path / "35858933" / "output" / "model_final.pkl"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"weights")
    cached = cache_url(source.as_uri(), model_dir=str(tmp_path / "cache"), progress=False)
    assert os.path.basename(cached) == str(source).replace("/", "_")
    assert open(cached, "rb").read() == b"weights"


def test_detectron_checkpointer_converts_torchvision_resnet_weights(tmp_path):
    """A torchvision ImageNet-style file loads into the R-18 body and reproduces torchvision's features."""
    from maskrcnn_benchmark.modeling.backbone import build_backbone

    source = torchvision.models.resnet18(weights=None).eval()
    generator = torch.Generator().manual_seed(0)
    for module in source.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
            module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    weights_file = tmp_path / "resnet18-imagenet.pth"
    torch.save(source.state_dict(), weights_file)

    config = default_cfg.clone()
    config.merge_from_list(["MODEL.BACKBONE.CONV_BODY", "R-18-FPN", "MODEL.RESNETS.RES2_OUT_CHANNELS", 64,
                            "MODEL.RESNETS.STRIDE_IN_1X1", False])
    model = nn.Module()
    model.backbone = build_backbone(config).eval()
    DetectronCheckpointer(config, model, save_dir=str(tmp_path / "run")).load(str(weights_file), use_latest=False)

    image = torch.randn(1, 3, 64, 96, generator=generator)
    with torch.no_grad():
        body = model.backbone.body
        ours = body(image)[-1]
        x = source.maxpool(source.relu(source.bn1(source.conv1(image))))
        expected = source.layer4(source.layer3(source.layer2(source.layer1(x))))
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-4)
