"""Data sets for Wide Residual Networks: loading, download and verification, preprocessing, fast loaders.

- :func:`load_arrays` returns a whole small data set (CIFAR-10/100, SVHN, the bundled digits) as tensors.
- :class:`DeviceLoader` keeps such a set on the training device and augments whole batches there.
- :func:`make_loaders` builds the train and test loaders of any supported data set, image folders included.
"""

from __future__ import annotations

from wrn._lazy import lazy_attributes

# public name -> the module that defines it (loaded on first use)
_WHERE = {
    "ARRAY_DATASETS": "wrn.data.arrays",
    "AUGMENT_CHOICES": "wrn.data.registry",
    "CheckedImageFolder": "wrn.data.folder",
    "DATASETS": "wrn.data.registry",
    "DatasetInfo": "wrn.data.registry",
    "DeviceLoader": "wrn.data.device_loader",
    "FolderLoader": "wrn.data.folder",
    "Lighting": "wrn.data.folder",
    "NORMALIZATION_CHOICES": "wrn.data.registry",
    "UnsafePickleError": "wrn.data.safe_pickle",
    "apply_zca": "wrn.data.zca",
    "dataset_info": "wrn.data.registry",
    "download_file": "wrn.data.download",
    "ensure_files": "wrn.data.arrays",
    "extract_tar": "wrn.data.download",
    "fit_zca": "wrn.data.zca",
    "folder_transform": "wrn.data.folder",
    "gcn": "wrn.data.zca",
    "load_arrays": "wrn.data.arrays",
    "make_loaders": "wrn.data.loaders",
    "md5sum": "wrn.data.download",
    "normalization_constants": "wrn.data.registry",
    "read_cifar_batch": "wrn.data.arrays",
    "read_folder_arrays": "wrn.data.folder",
    "read_svhn_mat": "wrn.data.arrays",
    "reflect_index": "wrn.data.device_loader",
    "safe_load_pickle": "wrn.data.safe_pickle",
    "zca_whiten": "wrn.data.zca",
}

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

__getattr__, __dir__ = lazy_attributes(__name__, _WHERE, globals())
