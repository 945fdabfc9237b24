"""Data: image lists and folders, torch-only transforms, batch samplers, the Revisited Oxford /
Paris ground truth, the bundled UCI digits, and `apl.data.glyphs` (a generated many-class set of
characters drawn by matplotlib's fonts; imported on its own, as it loads matplotlib's FreeType)."""
from .digits import DigitsDataset, load_digits, split_digits
from .check import find_bad_images
from .image_list import IMAGE_EXTENSIONS, CorruptImageError, ImageList, read_image, read_image_list
from .revisited import REVISITED_DATASETS, RevisitedDataset, RevisitedImages, crop_query, download_revisited, load_revisited
from .samplers import ClassBalancedBatchSampler, ClassSpreadBatchSampler
from .transforms import (
    CenterCrop,
    ColorJitter,
    Compose,
    Normalize,
    RandomCrop,
    RandomHorizontalFlip,
    Resize,
    ResizeMax,
    eval_transform,
    to_tensor,
    train_transform,
)

__all__ = [
    "CenterCrop", "ClassBalancedBatchSampler", "ClassSpreadBatchSampler", "ColorJitter", "Compose",
    "CorruptImageError", "DigitsDataset", "IMAGE_EXTENSIONS", "ImageList", "Normalize", "REVISITED_DATASETS",
    "RandomCrop", "RandomHorizontalFlip", "Resize", "ResizeMax", "RevisitedDataset", "RevisitedImages", "crop_query",
    "download_revisited", "find_bad_images", "eval_transform", "load_digits", "load_revisited", "read_image", "read_image_list",
    "split_digits", "to_tensor", "train_transform",
]
