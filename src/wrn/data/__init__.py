"""Data sets for Wide Residual Networks: loading, download and verification, preprocessing, fast loaders.

- :func:`load_arrays` returns a whole small data set (CIFAR-10/100, SVHN, the bundled digits) as tensors.
- :class:`DeviceLoader` keeps such a set on the training device and augments whole batches there.
- :func:`make_loaders` builds the train and test loaders of any supported data set, image folders included.
"""

from wrn.data.arrays import ARRAY_DATASETS, ensure_files, load_arrays, read_cifar_batch, read_svhn_mat
from wrn.data.device_loader import DeviceLoader, reflect_index
from wrn.data.download import download_file, extract_tar, md5sum
from wrn.data.folder import CheckedImageFolder, FolderLoader, Lighting, folder_transform, read_folder_arrays
from wrn.data.loaders import make_loaders
from wrn.data.registry import (
    AUGMENT_CHOICES,
    DATASETS,
    NORMALIZATION_CHOICES,
    DatasetInfo,
    dataset_info,
    normalization_constants,
)
from wrn.data.safe_pickle import UnsafePickleError, safe_load_pickle
from wrn.data.zca import apply_zca, fit_zca, gcn, zca_whiten

__all__ = [
    "ARRAY_DATASETS",
    "apply_zca",
    "fit_zca",
    "gcn",
    "zca_whiten",
    "AUGMENT_CHOICES",
    "DATASETS",
    "NORMALIZATION_CHOICES",
    "DatasetInfo",
    "DeviceLoader",
    "CheckedImageFolder",
    "FolderLoader",
    "Lighting",
    "folder_transform",
    "make_loaders",
    "read_folder_arrays",
    "UnsafePickleError",
    "dataset_info",
    "download_file",
    "ensure_files",
    "extract_tar",
    "load_arrays",
    "md5sum",
    "normalization_constants",
    "read_cifar_batch",
    "read_svhn_mat",
    "reflect_index",
    "safe_load_pickle",
]
