"""Catalogs of dataset locations and pretrained-model URLs.

``DatasetCatalog.get(name)`` turns a name used in ``DATASETS.TRAIN`` / ``DATASETS.TEST`` into the
dataset class to build (``factory``, a class name in ``maskrcnn_benchmark.data.datasets``) and its
constructor arguments. Paths are relative to ``DATA_DIR`` ("datasets" in the working directory).
``ModelCatalog.get(name)`` turns a ``catalog://`` weight name into a download URL.

This file is loaded by path (``cfg.PATHS_CATALOG``), so it must not import from the package.
"""
import os


class DatasetCatalog:
    DATA_DIR = "datasets"
    # name -> {"img_dir": image folder, "ann_file": annotation JSON}, both relative to DATA_DIR, and
    # optionally "factory" (dataset class name). Without "factory" the class follows from the name:
    # "lvis_*" and "synthetic_lt_*" -> LVISDataset, names containing "coco" -> COCODataset.
    DATASETS = {
        # COCO (upstream names; coco_2014_minival holds the same images as COCO val2017)
        "coco_2017_train": {
            "img_dir": "coco/train2017",
            "ann_file": "coco/annotations/instances_train2017.json",
        },
        "coco_2017_val": {
            "img_dir": "coco/val2017",
            "ann_file": "coco/annotations/instances_val2017.json",
        },
        "coco_2014_train": {
            "img_dir": "coco/train2014",
            "ann_file": "coco/annotations/instances_train2014.json",
        },
        "coco_2014_val": {
            "img_dir": "coco/val2014",
            "ann_file": "coco/annotations/instances_val2014.json",
        },
        "coco_2014_minival": {
            "img_dir": "coco/val2014",
            "ann_file": "coco/annotations/instances_minival2014.json",
        },
        "coco_2014_valminusminival": {
            "img_dir": "coco/val2014",
            "ann_file": "coco/annotations/instances_valminusminival2014.json",
        },
        "keypoints_coco_2014_train": {
            "img_dir": "coco/train2014",
            "ann_file": "coco/annotations/person_keypoints_train2014.json",
        },
        "keypoints_coco_2014_val": {
            "img_dir": "coco/val2014",
            "ann_file": "coco/annotations/person_keypoints_val2014.json",
        },
        "keypoints_coco_2014_minival": {
            "img_dir": "coco/val2014",
            "ann_file": "coco/annotations/person_keypoints_minival2014.json",
        },
        "keypoints_coco_2014_valminusminival": {
            "img_dir": "coco/val2014",
            "ann_file": "coco/annotations/person_keypoints_valminusminival2014.json",
        },
        # Pascal VOC and Cityscapes converted to COCO format (read by COCODataset)
        "voc_2007_train_cocostyle": {
            "img_dir": "voc/VOC2007/JPEGImages",
            "ann_file": "voc/VOC2007/Annotations/pascal_train2007.json",
        },
        "voc_2007_val_cocostyle": {
            "img_dir": "voc/VOC2007/JPEGImages",
            "ann_file": "voc/VOC2007/Annotations/pascal_val2007.json",
        },
        "voc_2007_test_cocostyle": {
            "img_dir": "voc/VOC2007/JPEGImages",
            "ann_file": "voc/VOC2007/Annotations/pascal_test2007.json",
        },
        "voc_2012_train_cocostyle": {
            "img_dir": "voc/VOC2012/JPEGImages",
            "ann_file": "voc/VOC2012/Annotations/pascal_train2012.json",
        },
        "voc_2012_val_cocostyle": {
            "img_dir": "voc/VOC2012/JPEGImages",
            "ann_file": "voc/VOC2012/Annotations/pascal_val2012.json",
        },
        "cityscapes_fine_instanceonly_seg_train_cocostyle": {
            "img_dir": "cityscapes/images",
            "ann_file": "cityscapes/annotations/instancesonly_filtered_gtFine_train.json",
        },
        "cityscapes_fine_instanceonly_seg_val_cocostyle": {
            "img_dir": "cityscapes/images",
            "ann_file": "cityscapes/annotations/instancesonly_filtered_gtFine_val.json",
        },
        "cityscapes_fine_instanceonly_seg_test_cocostyle": {
            "img_dir": "cityscapes/images",
            "ann_file": "cityscapes/annotations/instancesonly_filtered_gtFine_test.json",
        },
        # LVIS v0.5 (1,230 categories; the paper's benchmark). Images are COCO 2017's.
        "lvis_v0.5_train": {
            "img_dir": "coco/train2017",
            "ann_file": "lvis/lvis_v0.5_train.json",
        },
        "lvis_v0.5_val": {
            "img_dir": "coco/val2017",
            "ann_file": "lvis/lvis_v0.5_val.json",
        },
        # LVIS v1 (1,203 categories). Its val split also holds COCO train2017 images, so the image
        # folder is the COCO root: an image is "<img_dir>/<split>/<file>", both taken from the last
        # two parts of the record's coco_url (e.g. ".../train2017/000000391895.jpg").
        "lvis_v1_train": {
            "img_dir": "coco",
            "ann_file": "lvis/lvis_v1_train.json",
        },
        "lvis_v1_val": {
            "img_dir": "coco",
            "ann_file": "lvis/lvis_v1_val.json",
        },
        # The embedded synthetic long-tailed benchmark (LVIS format), written by the project's generator.
        "synthetic_lt_train": {
            "img_dir": "synthetic_lt/images/train",
            "ann_file": "synthetic_lt/train.json",
        },
        "synthetic_lt_val": {
            "img_dir": "synthetic_lt/images/val",
            "ann_file": "synthetic_lt/val.json",
        },
    }

    @staticmethod
    def factory_for(name):
        """Dataset class name of a catalog entry (see the comment on DATASETS)."""
        attrs = DatasetCatalog.DATASETS[name]
        if "factory" in attrs:
            return attrs["factory"]
        if name.startswith(("lvis_", "synthetic_lt_")):
            return "LVISDataset"
        if "coco" in name:
            return "COCODataset"
        raise RuntimeError(
            f"Dataset '{name}': cannot tell its dataset class from the name; add "
            f"'factory': 'COCODataset' or 'LVISDataset' to its DatasetCatalog.DATASETS entry."
        )

    @staticmethod
    def get(name):
        """Return {"factory": class name, "args": {"root": image folder, "ann_file": JSON path}}."""
        if name not in DatasetCatalog.DATASETS:
            known = ", ".join(sorted(DatasetCatalog.DATASETS))
            raise RuntimeError(
                f"Dataset '{name}' is not in the catalog. Known datasets: {known}. To add one, put an "
                f"entry '{name}': {{'img_dir': ..., 'ann_file': ...}} (paths relative to "
                f"DatasetCatalog.DATA_DIR = '{DatasetCatalog.DATA_DIR}') in DatasetCatalog.DATASETS "
                f"of maskrcnn_benchmark/config/paths_catalog.py, or in your own copy of that file "
                f"named by the PATHS_CATALOG config key."
            )
        attrs = DatasetCatalog.DATASETS[name]
        args = dict(
            root=os.path.join(DatasetCatalog.DATA_DIR, attrs["img_dir"]),
            ann_file=os.path.join(DatasetCatalog.DATA_DIR, attrs["ann_file"]),
        )
        return dict(factory=DatasetCatalog.factory_for(name), args=args)


class ModelCatalog:
    S3_C2_DETECTRON_URL = "https://dl.fbaipublicfiles.com/detectron"
    # ImageNet-pretrained Caffe2 backbones: "ImageNetPretrained/<key>" -> path under the URL prefix.
    C2_IMAGENET_MODELS = {
        "MSRA/R-50": "ImageNetPretrained/MSRA/R-50.pkl",
        "MSRA/R-50-GN": "ImageNetPretrained/47261647/R-50-GN.pkl",
        "MSRA/R-101": "ImageNetPretrained/MSRA/R-101.pkl",
        "MSRA/R-101-GN": "ImageNetPretrained/47592356/R-101-GN.pkl",
        "FAIR/20171220/X-101-32x8d": "ImageNetPretrained/20171220/X-101-32x8d.pkl",
    }
    # Detectron's COCO-trained models: "<model id>/<model name>" -> run signature in their URL.
    C2_DETECTRON_SUFFIX = (
        "output/train/{}coco_2014_train%3A{}coco_2014_valminusminival/generalized_rcnn/model_final.pkl"
    )
    C2_DETECTRON_MODELS = {
        "35857197/e2e_faster_rcnn_R-50-C4_1x": "01_33_49.iAX0mXvW",
        "35857345/e2e_faster_rcnn_R-50-FPN_1x": "01_36_30.cUF7QR7I",
        "35857890/e2e_faster_rcnn_R-101-FPN_1x": "01_38_50.sNxI7sX7",
        "36761737/e2e_faster_rcnn_X-101-32x8d-FPN_1x": "06_31_39.5MIHi1fZ",
        "35858791/e2e_mask_rcnn_R-50-C4_1x": "01_45_57.ZgkA7hPB",
        "35858933/e2e_mask_rcnn_R-50-FPN_1x": "01_48_14.DzEQe4wC",
        "35861795/e2e_mask_rcnn_R-101-FPN_1x": "02_31_37.KqyEK4tT",
        "36761843/e2e_mask_rcnn_X-101-32x8d-FPN_1x": "06_35_59.RZotkLKI",
        "37129812/e2e_mask_rcnn_X-152-32x8d-FPN-IN5k_1.44x": "09_35_36.8pzTQKYK",
        "37697547/e2e_keypoint_rcnn_R-50-FPN_1x": "08_42_54.kdzV35ao",
    }

    @staticmethod
    def get(name):
        """URL of a catalog model, e.g. "ImageNetPretrained/MSRA/R-50" or
        "Caffe2Detectron/COCO/35858933/e2e_mask_rcnn_R-50-FPN_1x"."""
        if name.startswith("Caffe2Detectron/COCO/"):
            return ModelCatalog.get_c2_detectron_12_2017_baselines(name)
        if name.startswith("ImageNetPretrained/"):
            return ModelCatalog.get_c2_imagenet_pretrained(name)
        raise RuntimeError(
            f"Model '{name}' is not in the catalog: names start with 'ImageNetPretrained/' "
            f"({', '.join(sorted(ModelCatalog.C2_IMAGENET_MODELS))}) or 'Caffe2Detectron/COCO/' "
            f"({', '.join(sorted(ModelCatalog.C2_DETECTRON_MODELS))}). Use a URL or a file path "
            f"in MODEL.WEIGHT for other weights."
        )

    @staticmethod
    def get_c2_imagenet_pretrained(name):
        key = name[len("ImageNetPretrained/"):]
        if key not in ModelCatalog.C2_IMAGENET_MODELS:
            raise RuntimeError(
                f"Unknown model '{name}'; known ImageNetPretrained/ names: "
                f"{', '.join(sorted(ModelCatalog.C2_IMAGENET_MODELS))}"
            )
        return "/".join([ModelCatalog.S3_C2_DETECTRON_URL, ModelCatalog.C2_IMAGENET_MODELS[key]])

    @staticmethod
    def get_c2_detectron_12_2017_baselines(name):
        """Detectron stores its 12/2017 baselines at
        <prefix>/<model id>/12_2017_baselines/<model name>.yaml.<signature>/<suffix>."""
        key = name[len("Caffe2Detectron/COCO/"):]
        if key not in ModelCatalog.C2_DETECTRON_MODELS:
            raise RuntimeError(
                f"Unknown model '{name}'; known Caffe2Detectron/COCO/ names: "
                f"{', '.join(sorted(ModelCatalog.C2_DETECTRON_MODELS))}"
            )
        dataset_tag = "keypoints_" if "keypoint" in key else ""
        suffix = ModelCatalog.C2_DETECTRON_SUFFIX.format(dataset_tag, dataset_tag)
        model_id, model_name = key.split("/")
        unique_name = f"{model_name}.yaml.{ModelCatalog.C2_DETECTRON_MODELS[key]}"
        return "/".join(
            [ModelCatalog.S3_C2_DETECTRON_URL, model_id, "12_2017_baselines", unique_name, suffix]
        )
