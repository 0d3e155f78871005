"""One episode of the meta weight generator's training (maskrcnn_benchmark/lst/episode.py): every
new row generated in every episode (paper §3.4), gradient caching giving the joint graph's
gradients, the subset variant, and two gloo processes giving the update of one process with the
same support and query data."""
import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from fixtures_training import TEST_LST_CONFIGS, seed_everything, write_random_phase1_experiment
from maskrcnn_benchmark.config import cfg as default_cfg
from maskrcnn_benchmark.engine.trainer import optimizer_step
from maskrcnn_benchmark.lst.episode import episode_step, generate_support_weights, load_support_batch
from maskrcnn_benchmark.lst.episodic_trainer import build_episodic_weight_generator, make_support_sampler
from maskrcnn_benchmark.lst.phase import ResolvedPhase, make_phase_data_loader
from maskrcnn_benchmark.lst.phase_config import phase_config
from maskrcnn_benchmark.lst.support_sampler import SupportSampler
from maskrcnn_benchmark.lst.weight_generator import build_weight_generator
from maskrcnn_benchmark.modeling.detector import build_detection_model
from maskrcnn_benchmark.modeling.roi_heads.box_head.roi_box_predictors import FPNCosinePredictor
from maskrcnn_benchmark.solver import make_optimizer
from maskrcnn_benchmark.structures.bounding_box import BoxList
from maskrcnn_benchmark.utils.model_serialization import load_state_dict

BASE, NEW_LABELS = 4, [5, 6]  # the test experiment: C_0 of 4 classes, phase 1 adds classes 5 and 6
QUERY_INDICES = (3, 7)  # dataset indices of the query images (one per process in the two-process test)
CPU = torch.device("cpu")
# The body trains from res3 on, so that the support passes' gradient reaches the backbone too; the
# learning rate is 0, so that the optimizer step of an episode leaves the weights as they were.
EPISODE_OPTS = [
    "MODEL.FEW_SHOT.ENABLED", True,
    "MODEL.BACKBONE.FREEZE_CONV_BODY_AT", 2,
    "MODEL.LST.DISTILL.ENABLED", False,
    "SOLVER.BASE_LR", 0.0,
]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    out, catalog, _ = write_random_phase1_experiment(tmp_path_factory.mktemp("mwg_episode"), BASE, 7)
    return {"out": str(out), "catalog": catalog}


def episode_cfg(experiment, *opts):
    return phase_config(TEST_LST_CONFIGS, experiment["out"], 1,
                        ["PATHS_CATALOG", experiment["catalog"], *EPISODE_OPTS, *opts])


class Episode:
    """The phase-1 model (expanded theta_0), its generator and optimizer, and the phase's
    training dataset; ``run`` is one episode, returning the gradients it leaves."""

    def __init__(self, cfg, state=None):
        self.cfg = cfg
        self.phase = ResolvedPhase.from_config(cfg)
        self.dataset = make_phase_data_loader(cfg, is_train=True).dataset
        seed_everything(0)
        self.model = build_detection_model(cfg)
        load_state_dict(self.model, torch.load(cfg.MODEL.WEIGHT, weights_only=True)["model"])
        self.optimizer = make_optimizer(cfg, self.model)
        self.generator = build_episodic_weight_generator(cfg, self.phase, self.model, self.optimizer)
        if state is not None:
            self.model.load_state_dict(state["model"])
            self.generator.load_state_dict(state["generator"])
        self.model.train()
        self.generator.train()

    def state(self):
        return {"model": self.model.state_dict(), "generator": self.generator.state_dict()}

    def query(self, indices):
        """The query batch of dataset ``indices`` (fixed flips)."""
        return load_support_batch(self.dataset, [(0, i) for i in indices], self.cfg.DATALOADER.SIZE_DIVISIBILITY,
                                  CPU, seeds=list(indices))

    def trainer(self, model):
        optimizer = self.optimizer
        return SimpleNamespace(
            cfg=self.cfg, model=model, device=CPU, optimizer=optimizer,
            optimizer_step=lambda loss_dict, before_update=None: optimizer_step(
                loss_dict, optimizer, None, self.cfg, CPU, 1, before_update=before_update))

    def run(self, episode, query_indices, model=None, seed=100):
        images, targets = self.query(query_indices)
        torch.manual_seed(seed)
        _, labels, rows = episode_step(self.trainer(model or self.model), self.generator, BASE, self.dataset,
                                       episode, images, targets)
        return labels, rows, self.gradients()

    def gradients(self):
        named = [("model." + n, p) for n, p in self.model.named_parameters()]
        named += [("generator." + n, p) for n, p in self.generator.named_parameters()]
        return {name: None if p.grad is None else p.grad.detach().clone() for name, p in named}

    def sampler(self):
        return make_support_sampler(self.cfg, self.phase, self.dataset)


def assert_same_gradients(actual, expected, rtol=1e-10, atol=1e-12):
    """Every gradient equal to float tolerance; ``atol`` is relative to the tensor's largest entry."""
    assert actual.keys() == expected.keys()
    for name in expected:
        assert (actual[name] is None) == (expected[name] is None), name
        if expected[name] is not None:
            scale = float(expected[name].abs().max())
            torch.testing.assert_close(actual[name], expected[name], rtol=rtol, atol=atol * scale, msg=name)


CLS_GRAD = "model.roi_heads.box.predictor.cls_score.weight"


@pytest.mark.parametrize("cache", [False, True])
def test_every_new_row_is_generated_in_every_episode(experiment, cache):
    runner = Episode(episode_cfg(experiment, "MODEL.FEW_SHOT.GRADIENT_CACHE", cache))
    sampler = runner.sampler()
    for episode_index in range(3):
        episode = sampler.episode(episode_index)
        assert episode.labels == NEW_LABELS
        labels, rows, grads = runner.run(episode, QUERY_INDICES)
        assert labels == NEW_LABELS and rows.shape == (2, runner.generator.feat_dim)
        # The new rows of the classifier are not used: no gradient; the base and old rows are.
        assert torch.all(grads[CLS_GRAD][NEW_LABELS] == 0)
        assert grads[CLS_GRAD][1:BASE + 1].abs().sum() > 0
        for name, grad in grads.items():
            if name.startswith("generator."):
                assert grad is not None and grad.abs().sum() > 0, name


def test_gradient_caching_gives_the_joint_graph_gradients_on_the_detector(experiment):
    """The tiny detector (float32), two support chunks of one class, support RPN proposals on:
    the support passes run twice must give the rows and gradients of the joint graph."""
    runs = {}
    for cache in (False, True):
        runner = Episode(episode_cfg(experiment, "MODEL.FEW_SHOT.GRADIENT_CACHE", cache,
                                     "MODEL.FEW_SHOT.SUPPORT_CHUNK", 1))
        runs[cache] = runner.run(runner.sampler().episode(0), QUERY_INDICES)
    (joint_labels, joint_rows, joint), (cached_labels, cached_rows, cached) = runs[False], runs[True]
    assert cached_labels == joint_labels == NEW_LABELS
    torch.testing.assert_close(cached_rows, joint_rows, rtol=1e-6, atol=1e-7)
    assert_same_gradients(cached, joint, rtol=1e-4, atol=1e-5)
    # The support passes reach the backbone: its trainable body layers have a gradient.
    assert joint["model.backbone.body.layer3.0.conv1.weight"].abs().sum() > 0


def test_subset_variant_generates_its_classes_and_trains_the_other_new_rows(experiment):
    runner = Episode(episode_cfg(experiment, "MODEL.FEW_SHOT.CLASSES_PER_EPISODE", 1))
    sampler = runner.sampler()
    generated = []
    for episode_index in range(2):
        episode = sampler.episode(episode_index)
        assert len(episode.labels) == 1 and not episode.gathered
        labels, _, grads = runner.run(episode, QUERY_INDICES)
        assert labels == episode.labels
        (other,) = set(NEW_LABELS) - set(labels)
        assert torch.all(grads[CLS_GRAD][labels] == 0) and grads[CLS_GRAD][other].abs().sum() > 0
        generated += labels
    assert sorted(generated) == NEW_LABELS  # round robin over the new classes


# ----------------------------------------------------------------------------- a small float64 detector
SMALL_BASE, SMALL_NEW = 3, 5  # classes 1-3 are the base classes, 4-8 the new ones
SMALL_FEAT = 16


class SmallDetector(nn.Module):
    """A detector-shaped module set in float64: a two-layer conv backbone, RoIAlign (torchvision)
    on the ground-truth boxes and a linear box feature, the cosine predictor, and as losses the
    classification of the GT boxes plus a term on the classifier rows in use (as the Mask^X
    transfer reads them)."""

    def __init__(self, cfg):
        super().__init__()
        self.convs = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
        self.roi_heads = nn.Module()
        self.roi_heads.box = nn.Module()
        self.roi_heads.box.feature_extractor = self.extract
        self.fc = nn.Linear(8 * 4 * 4, SMALL_FEAT)
        self.roi_heads.box.predictor = FPNCosinePredictor(cfg, SMALL_FEAT)

    def backbone(self, images):
        """[(N, 8, H / 2, W / 2)]: one feature map, as a list like the FPN's."""
        return [self.convs(images)]

    def extract(self, features, rois):
        boxes = [r.bbox.to(features[0].dtype) for r in rois]
        pooled = torchvision.ops.roi_align(features[0], boxes, output_size=4, spatial_scale=0.5, aligned=True)
        return torch.relu(self.fc(pooled.flatten(start_dim=1)))

    def forward(self, images, targets):
        x = self.extract(self.backbone(images.tensors), targets)
        labels = torch.cat([t.get_field("labels") for t in targets])
        predictor = self.roi_heads.box.predictor
        logits, regression = predictor(x)
        transfer = (F.normalize(predictor.class_weights(), dim=1)[labels] * x).sum(dim=1).mean()
        return {"loss_classifier": F.cross_entropy(logits, labels), "loss_transfer": 0.1 * transfer,
                "loss_box_reg": regression.pow(2).mean()}


def small_dataset(seed=0):
    """Images (float64) of varying sizes; image k has a box of new class 4 + k % 5 and of a base class."""
    generator = torch.Generator().manual_seed(seed)
    items = []
    for k in range(12):
        height, width = 24 + 4 * (k % 3), 28 + 4 * (k % 2)
        image = torch.rand(3, height, width, generator=generator, dtype=torch.float64)
        boxes = torch.tensor([[2.0, 3.0, 15.0, 17.0], [8.0, 5.0, width - 2.0, height - 3.0]]) + k % 3
        target = BoxList(boxes, (width, height))
        target.add_field("labels", torch.tensor([SMALL_BASE + 1 + k % SMALL_NEW, 1 + k % SMALL_BASE]))
        items.append((image, target, k))
    return items


def small_cfg(*opts):
    cfg = default_cfg.clone()
    cfg.merge_from_list(["MODEL.ROI_BOX_HEAD.NUM_CLASSES", 1 + SMALL_BASE + SMALL_NEW,
                         "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", SMALL_FEAT,
                         "MODEL.FEW_SHOT.SUPPORT_PROPOSALS", False, "DATALOADER.SIZE_DIVISIBILITY", 0, *opts])
    return cfg


class SmallEpisode:
    """The small detector and a generator (float64, seeded) with an SGD optimizer of learning rate 0."""

    def __init__(self, cfg):
        torch.manual_seed(0)
        self.cfg = cfg
        self.dataset = small_dataset()
        self.model = SmallDetector(cfg).double()
        self.generator = build_weight_generator(cfg, SMALL_BASE).double()
        self.optimizer = torch.optim.SGD([{"params": list(self.model.parameters())},
                                          {"params": list(self.generator.parameters())}], lr=0.0)

    def sampler(self, num_replicas=1, rank=0):
        class_to_images = {}
        for image, target, index in self.dataset:
            class_to_images.setdefault(int(target.get_field("labels")[0]), []).append(index)
        return SupportSampler(class_to_images, self.cfg.MODEL.FEW_SHOT.CLASSES_PER_EPISODE, num_replicas, rank)

    def query(self, indices):
        return load_support_batch(self.dataset, [(0, i) for i in indices], 0, CPU)

    def run(self, episode, query_indices, model=None, scaler=None):
        images, targets = self.query(query_indices)
        trainer = SimpleNamespace(
            cfg=self.cfg, model=model or self.model, device=CPU, optimizer=self.optimizer,
            optimizer_step=lambda loss_dict, before_update=None: optimizer_step(
                loss_dict, self.optimizer, scaler, self.cfg, CPU, 1, before_update=before_update))
        _, labels, rows = episode_step(trainer, self.generator, SMALL_BASE, self.dataset, episode, images, targets)
        named = [("model." + n, p) for n, p in self.model.named_parameters()]
        named += [("generator." + n, p) for n, p in self.generator.named_parameters()]
        return labels, rows, {name: None if p.grad is None else p.grad.detach().clone() for name, p in named}


SMALL_QUERIES = ((0, 6), (3, 10))  # query images of process 0 and 1 (both, in one process)


@pytest.mark.parametrize("chunk", [1, 2, 8])
def test_gradient_caching_gives_the_joint_graph_gradients_in_float64(chunk):
    """Every parameter's gradient (backbone, box head, classifier rows, generator), 5 new classes
    in chunks of ``chunk``."""
    runs = {}
    for cache in (False, True):
        runner = SmallEpisode(small_cfg("MODEL.FEW_SHOT.GRADIENT_CACHE", cache, "MODEL.FEW_SHOT.SUPPORT_CHUNK", chunk))
        runs[cache] = runner.run(runner.sampler().episode(0), SMALL_QUERIES[0] + SMALL_QUERIES[1])
    (joint_labels, joint_rows, joint), (cached_labels, cached_rows, cached) = runs[False], runs[True]
    assert joint_labels == cached_labels == list(range(SMALL_BASE + 1, SMALL_BASE + SMALL_NEW + 1))
    torch.testing.assert_close(cached_rows, joint_rows, rtol=1e-12, atol=1e-14)
    assert_same_gradients(cached, joint)
    for name, grad in joint.items():
        assert grad is not None and grad.abs().sum() > 0, name
    assert torch.all(joint[CLS_GRAD][joint_labels] == 0)  # the new rows in use are the generated ones


def test_gradient_caching_under_loss_scaling_scales_the_support_gradients_once():
    """With a GradScaler (as under float16), the cached dL/dW^N is already scaled: after the
    step's unscaling every gradient is the unscaled joint graph's."""
    cfg = small_cfg("MODEL.FEW_SHOT.SUPPORT_CHUNK", 2)
    joint = SmallEpisode(small_cfg("MODEL.FEW_SHOT.GRADIENT_CACHE", False, "MODEL.FEW_SHOT.SUPPORT_CHUNK", 2))
    expected = joint.run(joint.sampler().episode(0), SMALL_QUERIES[0])[2]
    cached = SmallEpisode(cfg)
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    grads = cached.run(cached.sampler().episode(0), SMALL_QUERIES[0], scaler=scaler)[2]
    assert_same_gradients(grads, expected)


# ----------------------------------------------------------------------------- two processes
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_process_episode(rank, world_size, port, output_dir):
    """One episode per GRADIENT_CACHE value, the small detector in DistributedDataParallel (gloo);
    process r's query is SMALL_QUERIES[r]. Saves this process's results."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        results = {}
        for cache in (False, True):
            runner = SmallEpisode(small_cfg("MODEL.FEW_SHOT.GRADIENT_CACHE", cache, "MODEL.FEW_SHOT.SUPPORT_CHUNK", 2))
            episode = runner.sampler(world_size, rank).episode(0)
            results[cache] = (episode, runner.run(episode, SMALL_QUERIES[rank], model=DistributedDataParallel(runner.model)))
        torch.save(results, os.path.join(output_dir, "rank{}.pth".format(rank)))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_give_the_update_of_one_process(tmp_path):
    """Each process generates its share of the 5 new rows (3 and 2 classes) and scores its own
    query batch with all 5; the gradients are those of one process generating all the rows from
    the same support images and averaging the two query losses (float64), with and without
    gradient caching."""
    reference = SmallEpisode(small_cfg("MODEL.FEW_SHOT.SUPPORT_CHUNK", 2))
    episode = reference.sampler().episode(0)
    rows = {}  # each process's share in its chunks of 2, as the processes run them
    for rank in range(2):
        pairs, seeds = episode.pairs[rank::2], episode.seeds[rank::2]
        for start in range(0, len(pairs), 2):
            images, targets = load_support_batch(reference.dataset, pairs[start:start + 2], 0, CPU, seeds[start:start + 2])
            labels = [label for label, _ in pairs[start:start + 2]]
            _, generated = generate_support_weights(reference.model, reference.generator, images, targets, labels,
                                                    reference.cfg.MODEL.FEW_SHOT, SMALL_BASE)
            rows.update(zip(labels, generated))
    all_rows = torch.stack([rows[label] for label in episode.labels])
    predictor = reference.model.roi_heads.box.predictor
    losses = []
    for indices in SMALL_QUERIES:
        images, targets = reference.query(indices)
        with predictor.replaced_class_weights(episode.labels, all_rows):
            losses.append(sum(reference.model(images, targets).values()))
    reference.optimizer.zero_grad()
    (sum(losses) / len(losses)).backward()
    expected = {"model." + n: p.grad.clone() for n, p in reference.model.named_parameters()}
    expected.update({"generator." + n: p.grad.clone() for n, p in reference.generator.named_parameters()})

    mp.spawn(_two_process_episode, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in range(2):
        results = torch.load(tmp_path / "rank{}.pth".format(rank), weights_only=False)
        for cache, (process_episode, (labels, process_rows, grads)) in results.items():
            assert process_episode.gathered and process_episode.labels == episode.labels
            assert labels == episode.labels[rank::2]
            torch.testing.assert_close(process_rows, all_rows[rank::2].detach(), rtol=1e-12, atol=1e-14)
            assert_same_gradients(grads, expected)
