"""The per-frame CNN model: any torchvision classifier with its head over a dataset's classes.

Model
    Any torchvision classification model by name; ``inception_v3`` by default (the closest
    torchvision has to the paper's BN-Inception RGB stream; built without its auxiliary
    head). The 1000-way ImageNet head (the last ``nn.Linear`` with 1000 outputs) is replaced
    by a fresh one over the dataset's classes. ``weights``: None (random init), a path to a
    local torchvision-format ImageNet state dict, or ``"imagenet"``, which looks for
    torchvision's own file in the torch hub cache and is a :class:`DataError` when it is not
    there: nothing is downloaded at run time. Input normalisation (ImageNet mean/std) happens
    inside :class:`FrameClassifier`, on the device, so the loader ships ``uint8``.

Image sizes
    ``image_size`` defaults to the model's torchvision crop size (299 for Inception-v3, 224
    for most others). Frames are decoded with the shorter side scaled to ``resize =
    round(image_size / 0.875)`` (torchvision's resize size, e.g. 342 for 299).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from data_prep.errors import DataError

from .job import load_tensors

__all__ = ["FrameClassifier", "build_model", "image_sizes"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Constructor arguments some torchvision models need to be built without their auxiliary
# classifiers (which only matter for their original ImageNet training recipe).
_MODEL_KWARGS: dict[str, dict[str, Any]] = {
    "inception_v3": {"aux_logits": False, "init_weights": True},
    "googlenet": {"aux_logits": False, "init_weights": True},
}
# Keys of auxiliary heads present in ImageNet state dicts but not in the models built above.
_AUX_PREFIXES = ("AuxLogits.", "aux1.", "aux2.")


class FrameClassifier(nn.Module):
    """A torchvision backbone with its head over the dataset's classes; takes uint8 or
    float images in [0, 1], shape (B, 3, H, W), and normalises them itself."""

    def __init__(self, backbone: nn.Module, name: str, num_classes: int):
        super().__init__()
        self.backbone = backbone
        self.name = name
        self.num_classes = num_classes
        mean, std = torch.tensor(_IMAGENET_MEAN), torch.tensor(_IMAGENET_STD)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255.0)
        return self.backbone((x - self.mean) / self.std)


def image_sizes(model: str, image_size: int | None = None) -> tuple[int, int]:
    """(crop size, decode short side) for a model: torchvision's own unless given."""
    import torchvision.models as tvm

    crop, resize = 224, 256
    try:
        keywords = getattr(tvm.get_model_weights(model).DEFAULT.transforms, "keywords", {})
        crop = int(keywords.get("crop_size", crop))
        resize = int(keywords.get("resize_size", resize))
    except (ValueError, KeyError, AttributeError):
        pass
    if image_size is not None:
        return image_size, round(image_size / 0.875)
    return crop, max(resize, crop)


def resolve_weights(model: str, weights: str | Path | None) -> Path | None:
    """The local ImageNet state dict to start from (rule in the module docstring)."""
    if weights is None or str(weights) in ("", "none"):
        return None
    if str(weights) == "imagenet":
        import torchvision.models as tvm

        default = tvm.get_model_weights(model).DEFAULT
        name = PurePosixPath(urlparse(default.url).path).name
        path = Path(torch.hub.get_dir()) / "checkpoints" / name
        if not path.is_file():
            raise DataError(
                f"ImageNet weights for {model} are not on disk and nothing is downloaded at run "
                f"time: fetch {default.url} and pass --weights PATH (or put it at this path)",
                path,
            )
        return path
    path = Path(weights)
    if not path.is_file():
        raise DataError("weights file does not exist", path)
    return path


def build_model(
    name: str,
    num_classes: int,
    weights: str | Path | None = None,
    *,
    transform_input: bool | None = None,
) -> FrameClassifier:
    """A torchvision classifier by name, optionally ImageNet-initialised from a local file,
    with its 1000-way head replaced by a fresh ``num_classes``-way one.

    ``transform_input`` (Inception-v3 / GoogLeNet only) defaults to whether ImageNet weights
    are loaded, as torchvision does; checkpoints record it so a reloaded model sees its
    input exactly as in training."""
    import torchvision.models as tvm

    known = tvm.list_models(module=tvm)
    if name not in known:
        raise ValueError(
            f"unknown torchvision classification model {name!r} "
            f"(e.g. inception_v3, resnet18, resnet50, mobilenet_v3_small)"
        )
    path = resolve_weights(name, weights)
    kwargs = dict(_MODEL_KWARGS.get(name, {}))
    if "aux_logits" in kwargs:
        # ImageNet Inception/GoogLeNet weights expect torchvision's transform_input remap.
        kwargs["transform_input"] = path is not None if transform_input is None else transform_input
    net = tvm.get_model(name, weights=None, **kwargs)
    if path is not None:
        state = load_tensors(path, "weights file")
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            raise DataError("weights file is not a state dict", path)
        state = {k: v for k, v in state.items() if not k.startswith(_AUX_PREFIXES)}
        result = net.load_state_dict(state, strict=False)
        if result.missing_keys or result.unexpected_keys:
            bad = (result.missing_keys or result.unexpected_keys)[:3]
            raise DataError(
                f"weights do not fit {name}: {len(result.missing_keys)} missing and "
                f"{len(result.unexpected_keys)} unexpected keys, e.g. {bad}",
                path,
            )
    _replace_head(net, name, num_classes)
    return FrameClassifier(net, name, num_classes)


def _replace_head(net: nn.Module, name: str, num_classes: int) -> None:
    heads = [
        (n, m)
        for n, m in net.named_modules()
        if isinstance(m, nn.Linear) and m.out_features == 1000
    ]
    if not heads:
        raise ValueError(f"model {name!r} has no 1000-way nn.Linear head to replace; not supported")
    path, old = heads[-1]
    parent = net.get_submodule(path.rpartition(".")[0]) if "." in path else net
    setattr(parent, path.rpartition(".")[2], nn.Linear(old.in_features, num_classes))
