"""Two small classifiers for the shapes world's 8-way shape task, their config format, and their files.

- ``cnn``: a ResNet-style CNN in the manner of the CIFAR ResNets (He et al. 2016, section 4.2): a 3x3 stem,
  three stages of basic residual blocks (conv-BN-ReLU-conv-BN plus shortcut, then ReLU) at 16/32/64 channels
  (stages 2 and 3 halve the resolution; a 1x1 conv + BN shortcut where the shape changes), global average pool.
- ``vit``: a Vision Transformer (Dosovitskiy et al. 2021): non-overlapping patches embedded by a strided
  conv, a class token, learned positional embeddings, pre-norm ``nn.TransformerEncoderLayer`` blocks, a final
  LayerNorm, the class token's output as the feature.

Both end in ``fc = nn.Linear(64, n_classes)``, registered last, so the penultimate feature width is 64 (the
bundled CLIP's embedding width) and ``weightscope.models.linear_heads.linear_head`` finds ``fc``; nothing follows it.

A classifier is described by a JSON-able config dict (:func:`default_config`): ``format``, ``arch`` with its
hyper-parameters, ``class_names``, ``image_size``, ``mean`` / ``std`` (input normalisation of RGB in [0, 1]),
and optionally ``training`` (the run that made it). A classifier file is ``NAME.safetensors`` (float32 state
dict, the config also in its metadata) with the config beside it as ``NAME.json``.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from weightscope.core.errors import WeightscopeError
from weightscope.shapes import world
from weightscope.shapes.evaluate import MEAN, STD

FORMAT = "weightscope-classifier"
FEATURE_WIDTH = 64
ARCHS = ("cnn", "vit")
#: safetensors metadata key holding the config JSON (so a lone .safetensors file still loads)
METADATA_KEY = "weightscope_classifier"
ASSETS = Path(__file__).resolve().parent / "assets"

_DEFAULTS = {
    "cnn": {"widths": [16, 32, FEATURE_WIDTH], "blocks": [1, 1, 1]},
    "vit": {"patch": 6, "width": FEATURE_WIDTH, "depth": 4, "heads": 4, "mlp": 128},
}


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the shortcut, then ReLU (He et al. 2016)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class ShapesCNN(nn.Module):
    """(N, 3, S, S) -> logits (N, C); features = global average pool of the last stage (width widths[-1])."""

    def __init__(self, n_classes: int, widths=(16, 32, 64), blocks=(1, 1, 1)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        layers, c = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            for j in range(n):
                layers.append(BasicBlock(c, w, 2 if (i > 0 and j == 0) else 1))
                c = w
        self.stages = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, n_classes)

    def forward(self, x):
        return self.fc(self.pool(self.stages(self.stem(x))).flatten(1))


class ShapesViT(nn.Module):
    """(N, 3, S, S) -> logits (N, C); features = the final LayerNorm of the class token (width ``width``)."""

    def __init__(self, n_classes: int, image_size: int = 48, patch: int = 6, width: int = 64, depth: int = 4,
                 heads: int = 4, mlp: int = 128):
        super().__init__()
        if image_size % patch:
            raise WeightscopeError(f"vit: image_size {image_size} is not a multiple of patch {patch}")
        n_tokens = (image_size // patch) ** 2 + 1
        self.patch_embed = nn.Conv2d(3, width, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.randn(1, n_tokens, width) * 0.02)
        layer = nn.TransformerEncoderLayer(width, heads, mlp, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.fc = nn.Linear(width, n_classes)

    def forward(self, x):
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1) + self.pos_embed
        return self.fc(self.norm(self.encoder(tokens)[:, 0]))


def default_config(arch: str, **overrides) -> dict:
    """The config of a shapes-world shape classifier of ``arch`` ("cnn" or "vit"), with ``overrides`` applied."""
    if arch not in ARCHS:
        raise WeightscopeError(f"unknown classifier architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    config = {"format": FORMAT, "arch": arch, **_DEFAULTS[arch], "class_names": list(world.SHAPES),
              "image_size": world.IMAGE_SIZE, "mean": list(MEAN), "std": list(STD)}
    config.update(overrides)
    return config


def validate_config(config, where: str = "classifier config") -> dict:
    """``config`` checked (a dict with format, a known arch, class names, image size, 3-entry mean and std);
    WeightscopeError naming the first problem otherwise. Returns it unchanged."""
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise WeightscopeError(f"{where} is not a weightscope classifier config (expected a JSON object with "
                               f"\"format\": \"{FORMAT}\")")
    if config.get("arch") not in ARCHS:
        raise WeightscopeError(f"{where}: unknown arch {config.get('arch')!r}; expected one of {', '.join(ARCHS)}")
    names = config.get("class_names")
    if not isinstance(names, list) or len(names) < 2 or not all(isinstance(n, str) for n in names):
        raise WeightscopeError(f"{where}: class_names must be a list of at least 2 strings")
    size = config.get("image_size")
    if not isinstance(size, int) or size < 1:
        raise WeightscopeError(f"{where}: image_size must be a positive integer, got {size!r}")
    for key in ("mean", "std"):
        v = config.get(key)
        if not isinstance(v, list) or len(v) != 3 or not all(isinstance(x, (int, float)) for x in v):
            raise WeightscopeError(f"{where}: {key} must be a list of 3 numbers (R, G, B), got {v!r}")
    if any(s <= 0 for s in config["std"]):
        raise WeightscopeError(f"{where}: std must be positive, got {config['std']}")
    return config


def build_classifier(config: dict) -> nn.Module:
    """A freshly initialised module of ``config`` (uses torch's global RNG: seed it first for a repeatable init)."""
    validate_config(config)
    n = len(config["class_names"])
    if config["arch"] == "cnn":
        return ShapesCNN(n, widths=tuple(config["widths"]), blocks=tuple(config["blocks"]))
    return ShapesViT(n, image_size=config["image_size"], patch=config["patch"], width=config["width"],
                     depth=config["depth"], heads=config["heads"], mlp=config["mlp"])


def bundled_path(arch: str) -> Path:
    """Where the shipped classifier of ``arch`` lives: ``assets/shapes-classifier-<arch>.safetensors``."""
    return ASSETS / f"shapes-classifier-{arch}.safetensors"


def config_path(path: str | Path) -> Path:
    """The config sidecar of classifier file ``path``: ``NAME.json`` beside ``NAME.safetensors``."""
    return Path(path).with_suffix(".json")


def save_classifier(module: nn.Module, config: dict, path: str | Path) -> Path:
    """Write ``module``'s float32 state dict to ``path`` (safetensors) and ``config`` to ``config_path(path)``,
    together and atomically (``weightscope.core.fileio``). Returns ``path``."""
    from safetensors.torch import save

    from weightscope.core.fileio import outputs, write_atomic

    validate_config(config)
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightscopeError(f"a classifier file must end in .safetensors, got {path.name}")
    text = json.dumps(config, indent=1) + "\n"
    state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in module.state_dict().items()}
    with outputs():
        write_atomic(path, save(state, metadata={METADATA_KEY: text}))
        write_atomic(config_path(path), text)
    return path


def read_config(path: str | Path) -> dict | None:
    """The config of classifier file ``path``: its JSON sidecar, else the copy in its safetensors metadata;
    None when it has neither (a plain state dict). WeightscopeError for an unreadable or invalid config."""
    from safetensors import safe_open

    path = Path(path)
    side = config_path(path)
    if side.is_file():
        try:
            text = side.read_text(encoding="utf-8")
            return validate_config(json.loads(text), f"classifier config {side}")
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise WeightscopeError(f"cannot read classifier config {side}: {type(err).__name__}") from None
    try:
        with safe_open(str(path), "pt") as fh:
            text = (fh.metadata() or {}).get(METADATA_KEY)
    except Exception:  # not a safetensors file at all: the caller decides what it is
        return None
    if text is None:
        return None
    try:
        return validate_config(json.loads(text), f"the classifier config inside {path}")
    except json.JSONDecodeError:
        raise WeightscopeError(f"the classifier config inside {path} is not valid JSON") from None


def load_classifier_file(path: str | Path) -> tuple[nn.Module, dict]:
    """(module in eval mode on the CPU, config) of a classifier file written by :func:`save_classifier`.

    Raises WeightscopeError if the file is missing or unreadable, has no config, or its weights do not fit it.
    """
    from weightscope.models.checkpoints import read_checkpoint

    path = Path(path)
    raw = read_checkpoint(path)  # missing, empty, cut or foreign files: its one-line errors
    config = read_config(path)
    if config is None:
        raise WeightscopeError(f"{path} is a weightscope-style safetensors file without a classifier config "
                               f"(expected {config_path(path).name} beside it)")
    module = build_classifier(config)
    try:
        module.load_state_dict(raw.state_dict, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[1].strip() if len(str(err).splitlines()) > 1 else str(err)
        raise WeightscopeError(f"the weights in {path} do not fit its {config['arch']} config ({first})") from None
    return module.eval(), config
