"""``build_detection_model``: the meta-architecture named by MODEL.META_ARCHITECTURE."""
from maskrcnn_benchmark.utils.registry import Registry

from .generalized_rcnn import GeneralizedRCNN

_DETECTION_META_ARCHITECTURES = Registry(
    "MODEL.META_ARCHITECTURE", {"GeneralizedRCNN": GeneralizedRCNN}
)


def _reject_unsupported_features(cfg):
    """NotImplementedError, naming the fix, for upstream features this fork does not build."""
    model = cfg.MODEL
    if model.RETINANET_ON:
        raise NotImplementedError(
            "RetinaNet is not supported in this fork (MODEL.RETINANET_ON is True); set "
            "MODEL.RETINANET_ON False to build a Faster / Mask R-CNN"
        )
    if model.KEYPOINT_ON:
        raise NotImplementedError(
            "keypoint heads are not supported in this fork (MODEL.KEYPOINT_ON is True); set "
            "MODEL.KEYPOINT_ON False to build a Faster / Mask R-CNN"
        )
    fbnet_parts = {
        "MODEL.BACKBONE.CONV_BODY": model.BACKBONE.CONV_BODY,
        "MODEL.RPN.RPN_HEAD": model.RPN.RPN_HEAD,
        "MODEL.ROI_BOX_HEAD.FEATURE_EXTRACTOR": model.ROI_BOX_HEAD.FEATURE_EXTRACTOR,
        "MODEL.ROI_MASK_HEAD.FEATURE_EXTRACTOR": model.ROI_MASK_HEAD.FEATURE_EXTRACTOR,
    }
    fbnet_keys = [key for key, name in fbnet_parts.items() if name.startswith("FBNet")]
    if fbnet_keys:
        raise NotImplementedError(
            "FBNet models are not supported in this fork ({} select FBNet); use a ResNet "
            "body such as MODEL.BACKBONE.CONV_BODY 'R-50-FPN' with the default heads".format(
                ", ".join(fbnet_keys)
            )
        )
    if any(model.RESNETS.STAGE_WITH_DCN):
        raise NotImplementedError(
            "deformable convolutions are not supported in this fork "
            "(MODEL.RESNETS.STAGE_WITH_DCN is {}); set it to all False".format(
                tuple(model.RESNETS.STAGE_WITH_DCN)
            )
        )


def build_detection_model(cfg):
    """The detector for ``cfg`` (an nn.Module on the CPU; move it with ``.to(MODEL.DEVICE)``).

    Raises NotImplementedError for the upstream features this fork does not build (RetinaNet,
    keypoint heads, FBNet, deformable convolutions) and KeyError for an unknown
    MODEL.META_ARCHITECTURE.
    """
    _reject_unsupported_features(cfg)
    meta_arch = _DETECTION_META_ARCHITECTURES[cfg.MODEL.META_ARCHITECTURE]
    return meta_arch(cfg)
