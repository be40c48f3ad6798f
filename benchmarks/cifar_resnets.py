"""The CIFAR-10 ResNets of ../shared/models/cifar10-resnets and the real test images: network, loaders, features.

For tests and benchmarks only (the weightscope package never needs ../shared). The network is written from the
facts in that folder's README (He et al. 2016, CIFAR variant, "option A" shortcuts); the weights are
akamaster/pytorch_resnet_cifar10's.

    from cifar_resnets import load_resnet, load_cifar_test, penultimate_features
    net = load_resnet(20)                        # eval mode, CPU
    images, labels = load_cifar_test(limit=100)  # (N, 3, 32, 32) float32 normalised, (N,) int64
    feats = penultimate_features(net, images)    # (N, 64) float64: the input of net.linear

Import from tests with ``sys.path.insert(0, str(REPO / "benchmarks"))``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MODELS = SHARED / "models" / "cifar10-resnets"
DATA = SHARED / "data" / "cifar10-test"
DEPTHS = (20, 32, 44, 56)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


class BasicBlock(nn.Module):
    """conv3x3-bn-relu-conv3x3-bn plus a parameter-free shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        # option A: where the shape changes, subsample by the stride and zero-pad channels/4 on each side
        self.pad = (c_out - c_in) // 2 if (stride != 1 or c_in != c_out) else None
        self.stride = stride

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        short = x
        if self.pad is not None:
            short = F.pad(x[:, :, ::self.stride, ::self.stride], (0, 0, 0, 0, self.pad, self.pad))
        return F.relu(out + short)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32 x 32 images: 16-32-64 channels, global average pool, ``linear`` (10 x 64)."""

    def __init__(self, n: int, n_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU()  # a module (not F.relu) so that the stem's output can be hooked
        self.n = n
        stages, c_in = [], 16
        for c_out, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(BasicBlock(c_in, c_out, stride if i == 0 else 1))
                c_in = c_out
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(64, n_classes)

    def features(self, x):
        """Penultimate features (N, 64): the globally pooled output of layer3, the input of ``linear``."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return x.mean(dim=(2, 3))

    def hook_names(self) -> list[str]:
        """The stem and every residual block, in depth order (module names for forward hooks)."""
        return ["relu"] + [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(self.n)]

    def forward(self, x):
        return self.linear(self.features(x))


def weights_path(depth: int) -> Path:
    if depth not in DEPTHS:
        raise ValueError(f"depth must be one of {DEPTHS}, got {depth}")
    found = sorted(MODELS.glob(f"resnet{depth}-*.th"))
    if not found:
        raise FileNotFoundError(f"no resnet{depth}-*.th under {MODELS}")
    return found[0]


def load_resnet(depth: int, path: Path | None = None) -> CifarResNet:
    """The trained ResNet-``depth`` (20, 32, 44 or 56) in eval mode on the CPU (weights from ``path`` if given)."""
    blob = torch.load(path or weights_path(depth), map_location="cpu", weights_only=True)
    state = {k.removeprefix("module."): v for k, v in blob["state_dict"].items()}
    net = CifarResNet((depth - 2) // 6)
    net.load_state_dict(state, strict=True)
    return net.eval()


def load_cifar_test(limit: int | None = None, per_class: int | None = None,
                    folder: Path = DATA) -> tuple[torch.Tensor, np.ndarray]:
    """The CIFAR-10 test JPEGs as a normalised float32 tensor (N, 3, 32, 32) and labels (N,) int64.

    Files in class order, then file-name order. limit: the first ``limit`` files of that order; per_class: the first
    ``per_class`` files of every class (a balanced subset). RGB in [0, 1], normalised with the README's MEAN / STD.
    """
    from PIL import Image

    files, labels = [], []
    for c, name in enumerate(CLASSES):
        own = sorted((folder / name).glob("*.jpg"))
        if per_class is not None:
            own = own[:per_class]
        files += own
        labels += [c] * len(own)
    if not files:
        raise FileNotFoundError(f"no CIFAR-10 test images under {folder}")
    files, labels = files[:limit], labels[:limit]
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8) for p in files])
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    return x, np.asarray(labels, dtype=np.int64)


def penultimate_features(net: CifarResNet, images: torch.Tensor, batch_size: int = 500) -> np.ndarray:
    """Penultimate features (N, 64) float64 of normalised images (N, 3, 32, 32), batch by batch, no gradients."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            out.append(net.features(images[i:i + batch_size]).double().numpy())
    return np.concatenate(out)
