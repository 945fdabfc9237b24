"""Data: image lists and class folders (`image_list`, `folders`), image modes (`modes`), torch-only
transforms, batch samplers, the image check (`check`) and split summaries (`summary`), the
Revisited Oxford / Paris ground truth, the bundled UCI digits, and `apl.data.glyphs` (a generated
many-class set of characters drawn by matplotlib's fonts; imported on its own, as it loads
matplotlib's FreeType). Needs the extra apl[train] (Pillow, and matplotlib for the glyphs)."""
from ..extras import require as _require

_require("train", "apl.data")

from .check import CheckReport, check_dataset, check_images, find_bad_images
from .digits import DigitsDataset, load_digits, split_digits
from .image_list import IMAGE_EXTENSIONS, CorruptImageError, ImageList, decode_image, open_image, read_image, read_image_list
from .revisited import REVISITED_DATASETS, RevisitedDataset, RevisitedImages, crop_query, download_revisited, load_revisited
from .samplers import ClassBalancedBatchSampler, ClassSpreadBatchSampler, RandomBatchSampler
from .summary import compare_splits, describe_split
from .transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    RandomResizedCrop,
    Resize,
    ResizeMax,
    eval_transform,
    to_tensor,
    train_transform,
)

__all__ = [
    "CenterCrop", "CheckReport", "ClassBalancedBatchSampler", "ClassSpreadBatchSampler", "ColorJitter", "Compose",
    "CorruptImageError", "DigitsDataset", "IMAGE_EXTENSIONS", "ImageList", "Normalize", "REVISITED_DATASETS",
    "RandomBatchSampler", "RandomCrop", "RandomHorizontalFlip", "RandomResizedCrop", "Resize", "ResizeMax", "RevisitedDataset",
    "RevisitedImages", "check_dataset", "check_images", "compare_splits", "crop_query", "decode_image",
    "describe_split", "download_revisited", "eval_transform", "find_bad_images", "load_digits", "load_revisited",
    "open_image", "read_image", "read_image_list", "split_digits", "to_tensor", "train_transform",
]
