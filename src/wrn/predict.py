"""Inference on image files with a trained model: ``wrn predict RUN IMAGE...``.

An image is read as the run's test transform reads its data: converted to the model's channels (grayscale or
RGB), brought to the training size (the short side resized and the centre cropped; fb.resnet.torch's scale and
crop for the ImageNet recipe), and normalised with the run's mean and std on the 0..255 scale. All of it comes
from ``metadata.input`` of the model's model.json, which `wrn train` writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wrn.errors import CheckpointError, ConfigError
from wrn.models.registry import check_image_size

# Images per forward pass.
BATCH = 64


@dataclass
class Prediction:
    image: str
    top: list[tuple[int, str | None, float]]  # (class index, class name, probability), most likely first

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "top": [{"class": c, "name": n, "probability": p} for c, n, p in self.top],
        }


def read_metadata(directory: str | os.PathLike) -> dict[str, Any]:
    """``metadata`` of a model directory's model.json (empty if it has none), checked against its schema."""
    from wrn.models.io import read_model_doc

    return dict(read_model_doc(directory).get("metadata") or {})


def check_device(device: str) -> torch.device:
    """``device`` as a torch.device if this machine has it; else one sentence naming the fix."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"--device {device!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device} was asked for but no CUDA GPU is visible; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(
                f"--device {device}: this machine has {torch.cuda.device_count()} GPU(s), numbered from 0"
            )
    elif dev.type != "cpu":
        raise ConfigError(f"--device {device} is not supported by predict; use cpu, cuda or cuda:N")
    return dev


def image_transform(record: dict[str, Any]):
    """The transform from a PIL image to the model's input tensor, as the run's test transform; for weights
    that record torchvision's own (``resize_size``, ``interpolation``: its V1 and V2 ImageNet weights),
    torchvision's: the short side to ``resize_size``, then the centre crop."""
    from torchvision import transforms

    from wrn.data.folder import folder_transform

    size = record.get("size")
    if not size:
        raise CheckpointError(
            "the model's record of its input has no image size; pass --image-size with the size it was "
            "trained at"
        )
    if record.get("resize_size"):
        how = transforms.InterpolationMode(record.get("interpolation") or "bilinear")
        resize = [
            transforms.Resize(int(record["resize_size"]), interpolation=how, antialias=True),
            transforms.CenterCrop(int(size)),
            transforms.PILToTensor(),
        ]
    else:
        augment = "imagenet" if record.get("resize") == "imagenet" else "none"
        resize = [folder_transform(False, augment, int(size))]
    mean = torch.tensor(record["mean"], dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(record["std"], dtype=torch.float32).view(-1, 1, 1)
    mode = "L" if record["channels"] == 1 else "RGB"
    return transforms.Compose(
        [
            transforms.Lambda(lambda img: img.convert(mode)),
            *resize,
            transforms.Lambda(lambda x: (x.float() - mean) / std),
        ]
    )


def input_record(
    directory: Path, image_size: int | None = None, normalization: str | None = None
) -> dict[str, Any]:
    """The run's input record, with ``image_size`` overriding its size and ``normalization`` (a name of
    :data:`wrn.data.registry.NORMALIZATIONS`) its mean and std; where model.json has no record, those two
    make one (the channels are the model's)."""
    from wrn.data.registry import NORMALIZATION_CHOICES, normalization_for
    from wrn.models.io import read_model_doc

    meta = read_metadata(directory)
    record = dict(meta.get("input") or {})
    if not record and normalization is None:
        raise CheckpointError(
            f"{directory} has no record of how its images were prepared (model.json lacks metadata.input; it "
            "was not written by this version): pass --normalization NAME (and --image-size N) to say how"
        )
    if normalization is not None:
        if normalization not in NORMALIZATION_CHOICES:
            raise ConfigError(
                f"--normalization {normalization!r} is unknown: choose one of {', '.join(NORMALIZATION_CHOICES)}"
            )
        config = read_model_doc(directory)["config"]
        channels = int(record.get("channels") or config.get("in_channels", 3))
        record.update(channels=channels, normalization=normalization)
        if not record.get("size") and image_size is None:
            from wrn.errors import WRNError
            from wrn.models.registry import model_info

            try:  # the native size of the model's family (32 for CIFAR's, 224 for ImageNet's)
                record["size"] = model_info(str(config.get("name")))["input_size"]
            except WRNError:
                pass
        if normalization != "zca":
            mean, std = normalization_for(normalization, channels)
            record.update(mean=list(mean), std=list(std))
    if record.get("normalization") == "zca":
        raise CheckpointError(
            f"{directory} was trained on ZCA-whitened images, and the whitening of its training set is not "
            "stored with the model; predict supports mean/std normalisation only"
        )
    if image_size is not None:
        image_size = check_image_size(image_size)  # (odd sides for a 'SAME'-padding model: the model says)
        if record.get("resize_size") and record.get("size"):  # torchvision's ratio of resize to crop kept
            record["resize_size"] = round(record["resize_size"] * image_size / record["size"])
        record["size"] = image_size
    return record


def model_dir(
    directory: str | os.PathLike,
    what: str = "the run directory",
    fix: str = "pass a run directory written by `wrn train`",
) -> Path:
    """``directory`` as a Path if it is a readable directory that is not an unfinished run: a run that
    `wrn train` has not finished holds no model.json yet, and the sentence says how to finish it."""
    from wrn.paths import check_input_dir
    from wrn.train.rundir import RunDir

    path = check_input_dir(directory, what, fix)
    run = RunDir(path)
    if run.state() == "partial":
        raise CheckpointError(
            f"{path} is an unfinished run of `wrn train` (it holds {run.checkpoint.name} but no final model "
            f"yet): finish it with `wrn train --resume {path}`, or evaluate its checkpoint with `wrn eval {path}`"
        )
    if run.state() == "unstarted":
        raise CheckpointError(
            f"{path} is a run of `wrn train` stopped before its first checkpoint: start it again with "
            f"`wrn train --resume {path}`"
        )
    return path


def predict(
    directory: str | os.PathLike,
    images: list[str | os.PathLike],
    top_k: int = 5,
    device: str = "cpu",
    image_size: int | None = None,
    normalization: str | None = None,
) -> list[Prediction]:
    """The ``top_k`` classes of each image file, with names and probabilities, from the model in
    ``directory`` (a finished run or a model directory with a record of its input; ``normalization`` and
    ``image_size`` say it where the record lacks it, or override it)."""
    import wrn
    from wrn.data.folder import load_image
    from wrn.paths import check_input_file

    directory = model_dir(directory)
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1, not {top_k}")
    paths = [str(check_input_file(p, "the image", "pass image files (PNG, JPEG, ...)")) for p in images]
    dev = check_device(str(device))
    record = input_record(directory, image_size, normalization)
    classes = read_metadata(directory).get("classes")
    model = wrn.load_model(directory, map_location=dev)
    transform = image_transform(record)
    results: list[Prediction] = []
    for start in range(0, len(paths), BATCH):
        chunk = paths[start : start + BATCH]
        batch = torch.stack([transform(load_image(path, mode=None)) for path in chunk]).to(dev)
        with torch.inference_mode():
            logits = model(batch).float()
        if not torch.isfinite(logits).all():
            raise CheckpointError(
                f"the model's outputs are not finite (NaN or infinite) for {chunk[0]}"
                + (f" and {len(chunk) - 1} more" if len(chunk) > 1 else "")
                + f": the weights in {directory} are broken (a diverged run?); retrain or use another model"
            )
        probs = torch.softmax(logits, dim=1)
        k = min(top_k, probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        for path, vals, idxs in zip(chunk, values.tolist(), indices.tolist(), strict=True):
            top = [
                (i, classes[i] if classes and i < len(classes) else None, v)
                for i, v in zip(idxs, vals, strict=True)
            ]
            results.append(Prediction(path, top))
    return results
