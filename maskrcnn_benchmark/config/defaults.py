"""Default configuration: every key of upstream maskrcnn-benchmark plus the LST keys.

The tree is a yacs ``CfgNode``. Experiments merge a YAML file (``merge_from_file``) and then
command-line pairs (``merge_from_list``) into a clone; a key that is not defined here is an error.

Conventions kept from upstream:
* keys that differ between training and testing end in ``_TRAIN`` / ``_TEST``;
* sizes are in pixels of the resized network input unless a comment says otherwise;
* every upstream default is unchanged. The LST keys (``MODEL.LST``, ``MODEL.FEW_SHOT``, the cosine
  and mask-transfer keys, ``DATALOADER.SAMPLER``...) default to upstream behaviour, i.e. off.

Groups kept only so that upstream YAMLs still merge (this fork does not build those models):
``MODEL.ROI_KEYPOINT_HEAD``, ``MODEL.RETINANET``, ``MODEL.FBNET``, the deformable-conv keys of
``MODEL.RESNETS`` and ``TEST.BBOX_AUG``.
"""
import os

from yacs.config import CfgNode as CN

_C = CN()

# ---------------------------------------------------------------------------
# Model: meta-architecture and the heads that are switched on
# ---------------------------------------------------------------------------
_C.MODEL = CN()
_C.MODEL.RPN_ONLY = False  # proposals are the final output (no RoI heads)
_C.MODEL.MASK_ON = False
_C.MODEL.RETINANET_ON = False  # not built in this fork
_C.MODEL.KEYPOINT_ON = False  # not built in this fork
_C.MODEL.DEVICE = "cuda"  # "cuda" or "cpu"
_C.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
_C.MODEL.CLS_AGNOSTIC_BBOX_REG = False
# Initial weights: "" (none), "catalog://<ModelCatalog name>", an http(s) URL, a Detectron .pkl or a .pth.
_C.MODEL.WEIGHT = ""

# ---------------------------------------------------------------------------
# Input pipeline
# ---------------------------------------------------------------------------
_C.INPUT = CN()
_C.INPUT.MIN_SIZE_TRAIN = (800,)  # shorter side; one value drawn at random per training image
_C.INPUT.MAX_SIZE_TRAIN = 1333  # cap on the longer side
_C.INPUT.MIN_SIZE_TEST = 800
_C.INPUT.MAX_SIZE_TEST = 1333
_C.INPUT.PIXEL_MEAN = [102.9801, 115.9465, 122.7717]  # BGR, 0-255 (Caffe2 ImageNet models)
_C.INPUT.PIXEL_STD = [1.0, 1.0, 1.0]
_C.INPUT.TO_BGR255 = True  # feed BGR in [0, 255] as Caffe2 models expect
# Colour jitter strengths (0 = off)
_C.INPUT.BRIGHTNESS = 0.0
_C.INPUT.CONTRAST = 0.0
_C.INPUT.SATURATION = 0.0
_C.INPUT.HUE = 0.0
# Flip probabilities during training
_C.INPUT.HORIZONTAL_FLIP_PROB_TRAIN = 0.5
_C.INPUT.VERTICAL_FLIP_PROB_TRAIN = 0.0

# ---------------------------------------------------------------------------
# Datasets: names defined in paths_catalog.DatasetCatalog, in CATALOG_FILE or by
# maskrcnn_benchmark.data.catalog.register_dataset
# ---------------------------------------------------------------------------
_C.DATASETS = CN()
_C.DATASETS.TRAIN = ()
_C.DATASETS.TEST = ()
# A YAML file of one's own datasets, merged into the catalog, paths relative to the YAML file:
#   my_lt_train: {img_dir: images/train, ann_file: annotations/train.json, format: lvis}
# (format: lvis or coco). "" = none.
_C.DATASETS.CATALOG_FILE = ""

# ---------------------------------------------------------------------------
# Data loader
# ---------------------------------------------------------------------------
_C.DATALOADER = CN()
_C.DATALOADER.NUM_WORKERS = 4
_C.DATALOADER.SIZE_DIVISIBILITY = 0  # pad batches to a multiple of this (FPN configs use 32)
_C.DATALOADER.ASPECT_RATIO_GROUPING = True  # batch portrait and landscape images separately
# LST: training sampler. "" = upstream (random, or distributed over ranks);
# "RepeatFactorSampler" (LVIS repeat-factor sampling, Table 1 RFS baseline);
# "ClassAwareSampler" (class-aware sampling, Table 1 CAS baseline);
# "BalancedReplaySampler" (instance-level balanced replay, paper §3.3, needs MODEL.LST.REPLAY_PLAN_FILE).
_C.DATALOADER.SAMPLER = ""
# LST: repeat-factor threshold t; image repeat r = max over its categories of max(1, sqrt(t / f_c)),
# f_c = fraction of training images containing category c (LVIS paper; 0.001 as in the RFS baseline).
_C.DATALOADER.REPEAT_THRESHOLD = 0.001
# Seed of every training sampler's draws (shuffle order, repeat-factor rounding, class-aware picks),
# combined with the epoch; our addition, so that runs are reproducible and resume exactly.
# -1 = the run's SEED; a value >= 0 overrides it for the samplers only.
_C.DATALOADER.SEED = -1

# ---------------------------------------------------------------------------
# Backbone
# ---------------------------------------------------------------------------
_C.MODEL.BACKBONE = CN()
_C.MODEL.BACKBONE.CONV_BODY = "R-50-C4"  # name in the BACKBONES registry
# Freeze the stem and the first N-1 ResNet stages (2: stem + res2; 5: the whole ResNet body).
_C.MODEL.BACKBONE.FREEZE_CONV_BODY_AT = 2

# ---------------------------------------------------------------------------
# FPN
# ---------------------------------------------------------------------------
_C.MODEL.FPN = CN()
_C.MODEL.FPN.USE_GN = False
_C.MODEL.FPN.USE_RELU = False

# ---------------------------------------------------------------------------
# GroupNorm
# ---------------------------------------------------------------------------
_C.MODEL.GROUP_NORM = CN()
_C.MODEL.GROUP_NORM.DIM_PER_GP = -1  # channels per group (-1: use NUM_GROUPS)
_C.MODEL.GROUP_NORM.NUM_GROUPS = 32  # number of groups (-1: use DIM_PER_GP)
_C.MODEL.GROUP_NORM.EPSILON = 1e-5

# ---------------------------------------------------------------------------
# RPN
# ---------------------------------------------------------------------------
_C.MODEL.RPN = CN()
_C.MODEL.RPN.USE_FPN = False
_C.MODEL.RPN.ANCHOR_SIZES = (32, 64, 128, 256, 512)  # pixels of the network input
_C.MODEL.RPN.ANCHOR_STRIDE = (16,)  # feature stride(s); with FPN one per level, matching ANCHOR_SIZES
_C.MODEL.RPN.ASPECT_RATIOS = (0.5, 1.0, 2.0)  # height / width
_C.MODEL.RPN.STRADDLE_THRESH = 0  # drop anchors beyond the image by more than this (-1: keep all)
_C.MODEL.RPN.FG_IOU_THRESHOLD = 0.7  # anchor is positive if IoU >= this
_C.MODEL.RPN.BG_IOU_THRESHOLD = 0.3  # anchor is negative if IoU < this
_C.MODEL.RPN.BATCH_SIZE_PER_IMAGE = 256  # sampled anchors per image
_C.MODEL.RPN.POSITIVE_FRACTION = 0.5
# Top-scoring proposals kept before NMS (per FPN level when FPN is used)
_C.MODEL.RPN.PRE_NMS_TOP_N_TRAIN = 12000
_C.MODEL.RPN.PRE_NMS_TOP_N_TEST = 6000
# Proposals kept after NMS (per FPN level when FPN is used)
_C.MODEL.RPN.POST_NMS_TOP_N_TRAIN = 2000
_C.MODEL.RPN.POST_NMS_TOP_N_TEST = 1000
_C.MODEL.RPN.NMS_THRESH = 0.7
_C.MODEL.RPN.MIN_SIZE = 0  # drop proposals smaller than this (pixels)
# Proposals kept after merging the FPN levels
_C.MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN = 2000
_C.MODEL.RPN.FPN_POST_NMS_TOP_N_TEST = 2000
# Training: apply FPN_POST_NMS_TOP_N_TRAIN to the whole batch (True, as Detectron) or per image.
_C.MODEL.RPN.FPN_POST_NMS_PER_BATCH = True
_C.MODEL.RPN.RPN_HEAD = "SingleConvRPNHead"  # name in the RPN_HEADS registry

# ---------------------------------------------------------------------------
# RoI heads (shared settings)
# ---------------------------------------------------------------------------
_C.MODEL.ROI_HEADS = CN()
_C.MODEL.ROI_HEADS.USE_FPN = False
_C.MODEL.ROI_HEADS.FG_IOU_THRESHOLD = 0.5  # proposal is foreground if IoU >= this
_C.MODEL.ROI_HEADS.BG_IOU_THRESHOLD = 0.5  # proposal is background if IoU < this
_C.MODEL.ROI_HEADS.BBOX_REG_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # (wx, wy, ww, wh) of the box coder
_C.MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE = 512  # sampled RoIs per image
_C.MODEL.ROI_HEADS.POSITIVE_FRACTION = 0.25
# Inference only
_C.MODEL.ROI_HEADS.SCORE_THRESH = 0.05  # drop detections scoring below this
_C.MODEL.ROI_HEADS.NMS = 0.5  # per-class NMS IoU threshold
_C.MODEL.ROI_HEADS.DETECTIONS_PER_IMG = 100  # detections kept per image (across classes); 0: no limit
# Detections kept per class in each image (after NMS, before DETECTIONS_PER_IMG); 0: no limit.
# Fixed AP (Dave et al. 2021) wants DETECTIONS_PER_IMG 0 and a low SCORE_THRESH (their 0.0001).
_C.MODEL.ROI_HEADS.DETECTIONS_PER_CLASS = 0

# ---------------------------------------------------------------------------
# Box head
# ---------------------------------------------------------------------------
_C.MODEL.ROI_BOX_HEAD = CN()
# LST uses "FPN2MLPCosineFeatureExtractor" (no ReLU after fc7) with "FPNCosinePredictor".
_C.MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR = "ResNet50Conv5ROIFeatureExtractor"
_C.MODEL.ROI_BOX_HEAD.PREDICTOR = "FastRCNNPredictor"
_C.MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO = 0  # 0: adaptive grid
_C.MODEL.ROI_BOX_HEAD.POOLER_SCALES = (1.0 / 16,)
_C.MODEL.ROI_BOX_HEAD.NUM_CLASSES = 81  # foreground classes + 1 (background)
_C.MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM = 1024  # width of fc6/fc7
_C.MODEL.ROI_BOX_HEAD.USE_GN = False
_C.MODEL.ROI_BOX_HEAD.DILATION = 1
_C.MODEL.ROI_BOX_HEAD.CONV_HEAD_DIM = 256  # FPNXconv1fc head
_C.MODEL.ROI_BOX_HEAD.NUM_STACKED_CONVS = 4  # FPNXconv1fc head
# LST: initial value of the cosine classifier's scale s (logits = s * cos); paper §4.1 and the
# authors' MODEL.FEW_SHOT.ScaleCls. Read by FPNCosinePredictor only.
_C.MODEL.ROI_BOX_HEAD.COSINE_SCALE = 10.0
# LST: s is a learnable scalar (authors' code); False keeps it fixed at COSINE_SCALE.
_C.MODEL.ROI_BOX_HEAD.COSINE_SCALE_LEARNABLE = True
# Box classification loss and its matching test-time score function (docs/long_tail_losses.md):
# "softmax" (upstream cross-entropy), "federated" (sigmoid, Zhou et al. 2021), "eqlv2" (sigmoid,
# Tan et al. CVPR 2021) or "seesaw" (softmax + objectness branch, Wang et al. CVPR 2021; the box
# classifier gains one objectness column).
_C.MODEL.ROI_BOX_HEAD.CLASSIFICATION_LOSS = "softmax"
# Federated loss: at most this many classes per batch, those of the sampled RoIs first, then
# negatives drawn by training image count ** FED_LOSS_FREQ_WEIGHT_POWER. 50 and 0.5: the LVIS
# setting of Zhou et al. ("Probabilistic two-stage detection", 2021, LVIS experiments) and
# detectron2's FED_LOSS_NUM_CLASSES / FED_LOSS_FREQ_WEIGHT_POWER defaults.
_C.MODEL.ROI_BOX_HEAD.FED_LOSS_NUM_CLASSES = 50
_C.MODEL.ROI_BOX_HEAD.FED_LOSS_FREQ_WEIGHT_POWER = 0.5
# Federated loss: the box classifier's biases start at -log((1 - PRIOR_PROB) / PRIOR_PROB), so
# every sigmoid first scores PRIOR_PROB (CenterNet2 / Detic's MODEL.ROI_BOX_HEAD.PRIOR_PROB with
# their sigmoid and federated losses). With bias 0 the first loss is ~0.69 per sampled class per
# RoI, which diverged in one of two seeds on the synthetic benchmark. Not read by other losses.
_C.MODEL.ROI_BOX_HEAD.PRIOR_PROB = 0.01
# EQLv2 (Tan et al., CVPR 2021, §3: negative weight sigmoid(GAMMA (g - MU)), positive weight
# 1 + ALPHA (1 - negative weight), g the accumulated positive / negative gradient ratio); the
# paper's LVIS values (§4, implementation details): gamma 12, mu 0.8, alpha 4.
_C.MODEL.ROI_BOX_HEAD.EQLV2_GAMMA = 12.0
_C.MODEL.ROI_BOX_HEAD.EQLV2_MU = 0.8
_C.MODEL.ROI_BOX_HEAD.EQLV2_ALPHA = 4.0
# Seesaw loss (Wang et al., CVPR 2021, §3: mitigation (N_j / N_i) ** P for N_j < N_i,
# compensation (sigma_j / sigma_i) ** Q for sigma_j > sigma_i); the paper's LVIS values (§4):
# p 0.8, q 2. SEESAW_EPS: lower bound of sigma_i in the compensation ratio (mmdetection's 0.01).
_C.MODEL.ROI_BOX_HEAD.SEESAW_P = 0.8
_C.MODEL.ROI_BOX_HEAD.SEESAW_Q = 2.0
_C.MODEL.ROI_BOX_HEAD.SEESAW_EPS = 0.01

# ---------------------------------------------------------------------------
# Mask head
# ---------------------------------------------------------------------------
_C.MODEL.ROI_MASK_HEAD = CN()
_C.MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR = "ResNet50Conv5ROIFeatureExtractor"
_C.MODEL.ROI_MASK_HEAD.PREDICTOR = "MaskRCNNC4Predictor"
_C.MODEL.ROI_MASK_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_MASK_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_MASK_HEAD.POOLER_SCALES = (1.0 / 16,)
_C.MODEL.ROI_MASK_HEAD.MLP_HEAD_DIM = 1024
_C.MODEL.ROI_MASK_HEAD.CONV_LAYERS = (256, 256, 256, 256)
_C.MODEL.ROI_MASK_HEAD.RESOLUTION = 14  # side of the predicted mask (FPN configs: 28)
_C.MODEL.ROI_MASK_HEAD.SHARE_BOX_FEATURE_EXTRACTOR = True
_C.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS = False  # paste masks into the image inside the model
_C.MODEL.ROI_MASK_HEAD.POSTPROCESS_MASKS_THRESHOLD = 0.5
# How POSTPROCESS_MASKS pastes: "masker" (upstream's Masker: one mask at a time, on the CPU),
# "batched" (all of an image's masks at once on the model's device; the same pixels up to float
# rounding at the threshold), or "auto" (batched where MODEL.DEVICE is CUDA, masker otherwise).
_C.MODEL.ROI_MASK_HEAD.PASTE_MODE = "auto"
_C.MODEL.ROI_MASK_HEAD.DILATION = 1
_C.MODEL.ROI_MASK_HEAD.USE_GN = False
# LST: Mask^X R-CNN weight transfer (paper §3.2): class mask weights = T(box classifier weights),
# T = Linear(1024, 1024) -> LeakyReLU -> Linear(1024, 256) -> LeakyReLU. Selects the transfer predictor.
_C.MODEL.ROI_MASK_HEAD.USE_BBOX2MASK = False
# LST: add a class-agnostic MLP mask (Linear(256*28*28 -> 28*28) on the deconv output) to every class
# channel (authors' code; needs USE_BBOX2MASK).
_C.MODEL.ROI_MASK_HEAD.USE_MLPMASK = False

# ---------------------------------------------------------------------------
# Keypoint head (not built in this fork; kept so upstream YAMLs merge)
# ---------------------------------------------------------------------------
_C.MODEL.ROI_KEYPOINT_HEAD = CN()
_C.MODEL.ROI_KEYPOINT_HEAD.FEATURE_EXTRACTOR = "KeypointRCNNFeatureExtractor"
_C.MODEL.ROI_KEYPOINT_HEAD.PREDICTOR = "KeypointRCNNPredictor"
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_RESOLUTION = 14
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_SAMPLING_RATIO = 0
_C.MODEL.ROI_KEYPOINT_HEAD.POOLER_SCALES = (1.0 / 16,)
_C.MODEL.ROI_KEYPOINT_HEAD.MLP_HEAD_DIM = 1024
_C.MODEL.ROI_KEYPOINT_HEAD.CONV_LAYERS = (512,) * 8
_C.MODEL.ROI_KEYPOINT_HEAD.RESOLUTION = 14
_C.MODEL.ROI_KEYPOINT_HEAD.NUM_CLASSES = 17  # keypoints per person
_C.MODEL.ROI_KEYPOINT_HEAD.SHARE_BOX_FEATURE_EXTRACTOR = True

# ---------------------------------------------------------------------------
# ResNet / ResNeXt (backbone body and the C4 RoI head)
# ---------------------------------------------------------------------------
_C.MODEL.RESNETS = CN()
_C.MODEL.RESNETS.NUM_GROUPS = 1  # 1: ResNet; > 1: ResNeXt
_C.MODEL.RESNETS.WIDTH_PER_GROUP = 64
_C.MODEL.RESNETS.STRIDE_IN_1X1 = True  # stride on the 1x1 conv (MSRA); False for C2/Torch models
_C.MODEL.RESNETS.TRANS_FUNC = "BottleneckWithFixedBatchNorm"
_C.MODEL.RESNETS.STEM_FUNC = "StemWithFixedBatchNorm"
_C.MODEL.RESNETS.RES5_DILATION = 1
_C.MODEL.RESNETS.BACKBONE_OUT_CHANNELS = 256 * 4  # FPN configs: 256
_C.MODEL.RESNETS.RES2_OUT_CHANNELS = 256
_C.MODEL.RESNETS.STEM_OUT_CHANNELS = 64
# Deformable convolutions (not built in this fork)
_C.MODEL.RESNETS.STAGE_WITH_DCN = (False, False, False, False)  # res2..res5
_C.MODEL.RESNETS.WITH_MODULATED_DCN = False
_C.MODEL.RESNETS.DEFORMABLE_GROUPS = 1

# ---------------------------------------------------------------------------
# RetinaNet (not built in this fork; kept so upstream YAMLs merge)
# ---------------------------------------------------------------------------
_C.MODEL.RETINANET = CN()
_C.MODEL.RETINANET.NUM_CLASSES = 81  # foreground classes + 1
_C.MODEL.RETINANET.ANCHOR_SIZES = (32, 64, 128, 256, 512)
_C.MODEL.RETINANET.ASPECT_RATIOS = (0.5, 1.0, 2.0)
_C.MODEL.RETINANET.ANCHOR_STRIDES = (8, 16, 32, 64, 128)
_C.MODEL.RETINANET.STRADDLE_THRESH = 0
_C.MODEL.RETINANET.OCTAVE = 2.0
_C.MODEL.RETINANET.SCALES_PER_OCTAVE = 3
_C.MODEL.RETINANET.USE_C5 = True  # P6 from C5 (True) or from P5
_C.MODEL.RETINANET.NUM_CONVS = 4  # convs in each tower, logits layer excluded
_C.MODEL.RETINANET.BBOX_REG_WEIGHT = 4.0
_C.MODEL.RETINANET.BBOX_REG_BETA = 0.11  # smooth-L1 beta
_C.MODEL.RETINANET.PRE_NMS_TOP_N = 1000  # per FPN level
_C.MODEL.RETINANET.FG_IOU_THRESHOLD = 0.5
_C.MODEL.RETINANET.BG_IOU_THRESHOLD = 0.4
_C.MODEL.RETINANET.LOSS_ALPHA = 0.25  # focal loss alpha
_C.MODEL.RETINANET.LOSS_GAMMA = 2.0  # focal loss gamma
_C.MODEL.RETINANET.PRIOR_PROB = 0.01  # initial foreground probability (logits bias)
_C.MODEL.RETINANET.INFERENCE_TH = 0.05  # score threshold at inference
_C.MODEL.RETINANET.NMS_TH = 0.4

# ---------------------------------------------------------------------------
# FBNet (not built in this fork; kept so upstream YAMLs merge)
# ---------------------------------------------------------------------------
_C.MODEL.FBNET = CN()
_C.MODEL.FBNET.ARCH = "default"
_C.MODEL.FBNET.ARCH_DEF = ""
_C.MODEL.FBNET.BN_TYPE = "bn"
_C.MODEL.FBNET.SCALE_FACTOR = 1.0
_C.MODEL.FBNET.WIDTH_DIVISOR = 1  # channel counts rounded to a multiple of this
_C.MODEL.FBNET.DW_CONV_SKIP_BN = True
_C.MODEL.FBNET.DW_CONV_SKIP_RELU = True
# Head settings: *_LAST_SCALE > 0 scales, == 0 skips, < 0 keeps the dimension; *_STRIDE 0 keeps it.
_C.MODEL.FBNET.DET_HEAD_LAST_SCALE = 1.0
_C.MODEL.FBNET.DET_HEAD_BLOCKS = []
_C.MODEL.FBNET.DET_HEAD_STRIDE = 0
_C.MODEL.FBNET.KPTS_HEAD_LAST_SCALE = 0.0
_C.MODEL.FBNET.KPTS_HEAD_BLOCKS = []
_C.MODEL.FBNET.KPTS_HEAD_STRIDE = 0
_C.MODEL.FBNET.MASK_HEAD_LAST_SCALE = 0.0
_C.MODEL.FBNET.MASK_HEAD_BLOCKS = []
_C.MODEL.FBNET.MASK_HEAD_STRIDE = 0
_C.MODEL.FBNET.RPN_HEAD_BLOCKS = 0  # 0: all blocks of the arch definition
_C.MODEL.FBNET.RPN_BN_TYPE = ""

# ---------------------------------------------------------------------------
# LST: class-incremental phases (paper §3.1-§3.3). Off by default: PHASE 0 with no phases file
# trains an ordinary model on the dataset's own label space.
# ---------------------------------------------------------------------------
# Decoupled classifier re-training (cRT; Kang et al., ICLR 2020): train only the box predictor's
# classification layer of the detector in MODEL.WEIGHT (everything else frozen), usually with
# DATALOADER.SAMPLER "ClassAwareSampler"; docs/long_tail_losses.md.
_C.MODEL.CRT = CN()
_C.MODEL.CRT.ENABLED = False
# Re-initialise the classifier (N(0, 0.01^2), bias 0) before re-training it, as Kang et al.
_C.MODEL.CRT.REINIT_CLASSIFIER = True

_C.MODEL.LST = CN()
# Phase index t: 0 trains theta_0 on the base classes C_0; t >= 1 trains on D_t = R_t U G_t.
_C.MODEL.LST.PHASE = 0
# phases.json (sorted_category_ids, groups, base, phase_size). When set, the training label of a
# category is 1 + its position in sorted_category_ids, limited to groups[0..PHASE]. "" = no division.
_C.MODEL.LST.PHASES_FILE = ""
# Base size b: the top-b categories by training instance count form C_0 (paper: 270). Read when
# writing the phases file.
_C.MODEL.LST.BASE_SIZE = 270
# Categories per incremental phase (paper: 160, so 6 phases on LVIS v0.5). Read with BASE_SIZE.
_C.MODEL.LST.PHASE_SIZE = 160
# replay_plan.json of this phase (n_c, per old class n_k and quota); read by BalancedReplaySampler.
_C.MODEL.LST.REPLAY_PLAN_FILE = ""
# Foreground classes of the previous model theta_{t-1} (authors' MODEL.NUM_DISTILL_CLASSES); 0 in phase 0.
_C.MODEL.LST.NUM_OLD_CLASSES = 0
# Old-class data in phases t >= 1: "balanced" (instance-level balanced replay, paper §3.3),
# "all" (every image of G_0..G_t, the Fig. 8 baseline) or "none" (G_t only).
_C.MODEL.LST.REPLAY = "balanced"
# Replay quota per old class k: "ceil" = ceil(n_c / n_k) (paper §3.3) or "round" = max(1, round(n_c / n_k))
# (authors' notebook).
_C.MODEL.LST.REPLAY_QUOTA_RULE = "ceil"
# The new-class images G_t in the replay sampler's epochs: "per_class" = one entry per (image, new
# class c in it) that trains the RoI heads on c only, so old classes are trained from their replay
# alone (paper §3.3, Fig. 3 (c); the authors' code); "all" = each image once, every class valid.
_C.MODEL.LST.NEW_IMAGE_LABELS = "per_class"
# For an (image, class k) entry of the replay sampler, only RoIs matched to class k are RoI-head
# positives and RoIs of other foreground classes are ignored (authors' code); the RPN uses every box.
_C.MODEL.LST.ROI_ACTIVE_CLASS_ONLY = True
# Std of the normal init of the classifier rows added for new classes at network expansion (paper
# §3.2, authors' get_finetune_pth.py).
_C.MODEL.LST.NEW_ROW_INIT_STD_CLS = 0.01
# Std of the normal init of the new box-regression rows (their biases start at 0).
_C.MODEL.LST.NEW_ROW_INIT_STD_BBOX = 0.001

# Knowledge distillation on the old-class cosine logits of new-class GT boxes (paper Eq. 2).
_C.MODEL.LST.DISTILL = CN()
_C.MODEL.LST.DISTILL.ENABLED = False  # authors' MODEL.USE_DISTILL (whose default was True)
_C.MODEL.LST.DISTILL.WEIGHT = 1.0  # multiplier of loss_distill in the total loss
# "l2": per box ||y_{t-1} - y'_t||_2 (paper Eq. 2); "squared_sum": per box sum of squared differences
# (authors' code). Both are averaged over the distilled boxes.
_C.MODEL.LST.DISTILL.LOSS = "l2"
# Checkpoint of the previous phase's model theta_{t-1} before expansion (NUM_OLD_CLASSES + 1 classifier
# rows): the frozen teacher whose old-class cosine logits on the new-class GT boxes are computed online,
# on the same (possibly flipped) images as the student. Required when ENABLED. Replaces the authors'
# offline logits file MODEL.DISTILL_WEIGHTS_FILE.
_C.MODEL.LST.DISTILL.TEACHER_WEIGHT = ""

# ---------------------------------------------------------------------------
# LST: meta weight generator (paper §3.4, Eq. 3; Gidaris & Komodakis attention generator).
# Off by default. When on (phases t >= 1 only, with FPNCosinePredictor), training is episodic
# (maskrcnn_benchmark/lst/episodic_trainer.py, episode.py): each iteration generates the classifier
# rows of every new class (or of CLASSES_PER_EPISODE of them) from one support image each, scores
# the next training batch with those rows in place of the classes' own, and updates generator and
# network together. At the end of the phase each new class's row is the mean, over the class's
# instances, of the weights generated from its support images; OUTPUT_DIR/model_final.pth is then
# an ordinary model and OUTPUT_DIR/weight_generator.pth holds the generator for the next phase.
# ---------------------------------------------------------------------------
_C.MODEL.FEW_SHOT = CN()
_C.MODEL.FEW_SHOT.ENABLED = False
_C.MODEL.FEW_SHOT.GENERATOR_TYPE = "AttentionBasedGenerator"  # name in the weight-generator registry
# a and b of Eq. 3: "elementwise" vectors (paper) or "full" 1024x1024 affine layers with bias
# (the authors' released compiled module).
_C.MODEL.FEW_SHOT.AFFINE = "elementwise"
_C.MODEL.FEW_SHOT.SCALE_ATT = 10.0  # initial value of the learnable attention temperature
# Initial generator weights: the previous phase's OUTPUT_DIR/weight_generator.pth (the generator
# carries over from phase to phase), or "" for a fresh generator.
_C.MODEL.FEW_SHOT.GENERATOR_WEIGHT = ""
# New classes whose rows an episode generates, one support image each. 0 (paper §3.4: the query
# is scored with [W^O, W^N], all of W^N generated) = every new class of the phase, split over the
# processes and gathered. E > 0 is this project's variant: E classes per episode and process, each
# process's query scored with its own E rows, the other new rows trained as ordinary parameters;
# capped at the number of new classes. Replaces the authors' iter_size, SUPPORT_PER_EPISODE /
# QUERY_PER_EPISODE.
_C.MODEL.FEW_SHOT.CLASSES_PER_EPISODE = 0
# Support images (one per class) that go through the network together.
_C.MODEL.FEW_SHOT.SUPPORT_CHUNK = 8
# Beyond the paper, the same gradients at bounded memory: the rows are generated without a graph,
# the query's backward stops at them, then each chunk's support pass is run again with gradient
# and dL/dW^N backpropagated into it. Peak memory: one chunk's graph and the query's, whatever the
# phase size; cost: each support image goes forward twice. False: the joint graph of all support
# passes and the query (the paper's algorithm), whose memory grows with the phase size.
_C.MODEL.FEW_SHOT.GRADIENT_CACHE = True
# Support RoIs per (image, class): the class's GT boxes, then (with SUPPORT_PROPOSALS) RPN
# proposals with IoU >= 0.5 to one of them, best IoU first, up to this many (authors: 30 positives).
_C.MODEL.FEW_SHOT.MAX_SUPPORT_ROIS_PER_IMAGE = 30
_C.MODEL.FEW_SHOT.SUPPORT_PROPOSALS = True  # False: the GT boxes only
# Support images per new class for its final weight at the end of the phase (a seeded choice of
# the class's training images); 0 = all of them (paper: "all the instances of class c in D_t").
_C.MODEL.FEW_SHOT.FINAL_SUPPORT_PER_CLASS = 0

# ---------------------------------------------------------------------------
# Solver
# ---------------------------------------------------------------------------
_C.SOLVER = CN()
_C.SOLVER.MAX_ITER = 40000
_C.SOLVER.BASE_LR = 0.001
_C.SOLVER.BIAS_LR_FACTOR = 2  # biases train at BASE_LR * this
_C.SOLVER.MOMENTUM = 0.9
_C.SOLVER.WEIGHT_DECAY = 0.0005
_C.SOLVER.WEIGHT_DECAY_BIAS = 0
_C.SOLVER.GAMMA = 0.1  # LR multiplier at each step
_C.SOLVER.STEPS = (30000,)  # iterations where the LR is multiplied by GAMMA
_C.SOLVER.WARMUP_FACTOR = 1.0 / 3
_C.SOLVER.WARMUP_ITERS = 500
_C.SOLVER.WARMUP_METHOD = "linear"  # "constant" or "linear"
_C.SOLVER.CHECKPOINT_PERIOD = 2500  # iterations between checkpoints
_C.SOLVER.TEST_PERIOD = 0  # iterations between validation runs (0: none)
_C.SOLVER.IMS_PER_BATCH = 16  # images per iteration over all GPUs

# ---------------------------------------------------------------------------
# Testing
# ---------------------------------------------------------------------------
_C.TEST = CN()
_C.TEST.EXPECTED_RESULTS = []  # e.g. [["bbox", "AP", 0.38, 0.01]] for check_expected_results
_C.TEST.EXPECTED_RESULTS_SIGMA_TOL = 4
_C.TEST.IMS_PER_BATCH = 8  # images per batch over all GPUs
_C.TEST.DETECTIONS_PER_IMG = 100  # RetinaNet only; the box head uses MODEL.ROI_HEADS.DETECTIONS_PER_IMG
# LST: detections per image kept for LVIS evaluation, across categories (LVIS protocol; lvis-api default).
_C.TEST.LVIS_MAX_DETS = 300
# Also report Fixed AP (Dave et al. 2021): the LVIS_FIXED_AP_DETS_PER_CLASS best detections of each
# category over the dataset, no per-image cap (metrics.json: "fixed_AP" in each iou type). Infer
# with MODEL.ROI_HEADS.DETECTIONS_PER_IMG 0 for the protocol's full lists.
_C.TEST.LVIS_FIXED_AP = False
_C.TEST.LVIS_FIXED_AP_DETS_PER_CLASS = 10000  # Dave et al. 2021, Sec. 3

# Post-hoc calibration NorCal (Pan et al., NeurIPS 2021): foreground softmax scores divided by
# N_j^GAMMA, N_j the training images of class j (DATASETS.TRAIN's one json), background kept, then
# renormalised over all classes (RENORM). GAMMA 0: off. Choose GAMMA with test_net.py
# --calibration-gammas on training images (README, "Post-hoc calibration").
_C.TEST.CALIBRATION = CN()
_C.TEST.CALIBRATION.GAMMA = 0.0
_C.TEST.CALIBRATION.RENORM = True

# Box test-time augmentation (not built in this fork; kept so upstream YAMLs merge)
_C.TEST.BBOX_AUG = CN()
_C.TEST.BBOX_AUG.ENABLED = False
_C.TEST.BBOX_AUG.H_FLIP = False  # flipped image at the test scale
_C.TEST.BBOX_AUG.SCALES = ()  # extra shorter-side sizes
_C.TEST.BBOX_AUG.MAX_SIZE = 4000
_C.TEST.BBOX_AUG.SCALE_H_FLIP = False  # flipped image at every extra scale

# ---------------------------------------------------------------------------
# Miscellaneous
# ---------------------------------------------------------------------------
_C.OUTPUT_DIR = "."
# Seed of the run (detectron2's key): every process seeds Python's random, NumPy and torch with it
# before the model is built, and it is the samplers' seed unless DATALOADER.SEED is set. -1 = drawn
# at random by the tools, logged and written into OUTPUT_DIR/config.yml (so that the run can be
# repeated from its config.yml alone); the synthetic configs set 0. LST phase t uses SEED + t.
_C.SEED = -1
_C.PATHS_CATALOG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paths_catalog.py")
# Numeric precision of training and inference: "float32", or "float16" / "bfloat16" for torch.autocast
# mixed precision (upstream: float32 or float16 through apex).
_C.DTYPE = "float32"
_C.AMP_VERBOSE = False  # upstream apex verbosity; log mixed-precision details
# LST: TensorBoard log folder for training scalars (authors' key); "" = no TensorBoard logging.
_C.TENSORBOARD_EXPERIMENT = ""

# The authors' LST keys, renamed here; merging one of them fails with a message naming the new key.
_C.register_renamed_key("MODEL.FEW_SHOT.ScaleCls", "MODEL.ROI_BOX_HEAD.COSINE_SCALE")
_C.register_renamed_key("MODEL.NUM_DISTILL_CLASSES", "MODEL.LST.NUM_OLD_CLASSES")
_C.register_renamed_key("MODEL.USE_DISTILL", "MODEL.LST.DISTILL.ENABLED")
_C.register_renamed_key(
    "MODEL.DISTILL_WEIGHTS_FILE",
    "MODEL.LST.DISTILL.TEACHER_WEIGHT",
    message="the old model's logits are computed online by the previous phase's model; set "
    "MODEL.LST.DISTILL.TEACHER_WEIGHT to its checkpoint instead of a distilled-logits JSON file.",
)
_C.register_renamed_key(
    "MODEL.QRY_BALANCE",
    "DATALOADER.SAMPLER",
    message='set DATALOADER.SAMPLER: "BalancedReplaySampler" instead of QRY_BALANCE: True.',
)
_C.register_renamed_key(
    "MODEL.QRY_INDICE_CLS",
    "MODEL.LST.REPLAY_PLAN_FILE",
    message="the replay plan (replay_plan.json) replaces the per-GPU index/class JSON files.",
)
_C.register_renamed_key(
    "SOLVER.USE_CAS",
    "DATALOADER.SAMPLER",
    message='set DATALOADER.SAMPLER: "ClassAwareSampler" instead of USE_CAS: True.',
)
