"""PyTorch twins of wingflow's CNN-6/CNN-7 landmark regressors, loading wingflow checkpoints.

The contract is the one of ``trainer/src/model.rs``:

* input: RGB uint8 images [B, S, S, 3] become float [B, 3, S, S] as ``v / 255 - 0.5``
  (``images_to_input``);
* output: the network's 2L numbers ``o``; landmark i in crop pixels (pixel centres at +0.5) is
  ``((o[2i], o[2i+1]) + 0.5) * S`` (``LandmarkNet.decode``);
* tensor names: ``blocks.{i}.conv.{weight,bias}``, ``blocks.{i}.bn.{weight,bias,running_mean,
  running_var}`` when batch norm is on, ``fc1.{weight,bias}``, ``out.{weight,bias}``;
* the safetensors ``__metadata__`` holds ``format``, ``arch``, ``num_points``, ``batch_norm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

WEIGHTS_FORMAT = "wingflow-landmark-net/1"
FC_WIDTH = 1024
ARCHS = {
    "cnn6": (64, (32, 64, 128, 256, 512)),
    "cnn7": (128, (64, 64, 128, 256, 512, 512)),
}


@dataclass(frozen=True)
class ModelConfig:
    """What a network is: architecture name, landmark count, batch norm on or off."""

    arch: str
    num_points: int
    batch_norm: bool = False

    @property
    def input_size(self) -> int:
        return ARCHS[self.arch][0]


class ConvBlock(nn.Module):
    """3x3 convolution (padding 1), optional batch norm, ReLU, 2x2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int, batch_norm: bool):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        # libtorch's batch_norm2d defaults: eps 1e-5, momentum 0.1 (as PyTorch's).
        self.bn = nn.BatchNorm2d(out_channels) if batch_norm else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return nn.functional.max_pool2d(torch.relu(x), 2)


class LandmarkNet(nn.Module):
    """CNN-6 (64x64 input) or CNN-7 (128x128 input) with the FC-1024 head and 2L outputs."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        if config.arch not in ARCHS:
            raise ValueError(f"unknown architecture {config.arch!r} (cnn6, cnn7)")
        self.config = config
        size, filters = ARCHS[config.arch]
        blocks, in_channels = [], 3
        for f in filters:
            blocks.append(ConvBlock(in_channels, f, config.batch_norm))
            in_channels = f
        self.blocks = nn.ModuleList(blocks)
        side = size >> len(filters)
        self.fc1 = nn.Linear(in_channels * side * side, FC_WIDTH)
        self.out = nn.Linear(FC_WIDTH, 2 * config.num_points)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Raw outputs [B, 2L] for an input [B, 3, S, S] from ``images_to_input``."""
        for block in self.blocks:
            x = block(x)
        return self.out(torch.relu(self.fc1(torch.flatten(x, 1))))

    def decode(self, raw: torch.Tensor) -> torch.Tensor:
        """Landmarks in crop pixels [B, L, 2] from raw outputs [B, 2L]."""
        return ((raw + 0.5) * self.config.input_size).reshape(-1, self.config.num_points, 2)

    @torch.no_grad()
    def predict(self, images: torch.Tensor) -> torch.Tensor:
        """Landmarks in crop pixels [B, L, 2] for uint8 images [B, S, S, 3] (eval mode)."""
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            return self.decode(self(images_to_input(images, device)))
        finally:
            self.train(was_training)


def images_to_input(images: torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 [B, S, S, 3] -> float [B, 3, S, S] as v / 255 - 0.5, on ``device``."""
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [B, S, S, 3], got {images.dtype} {tuple(images.shape)}")
    return images.to(device).permute(0, 3, 1, 2).float() / 255.0 - 0.5


def read_config(path: str) -> ModelConfig:
    """The ``ModelConfig`` stored in a wingflow weights file's metadata."""
    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{path}: format {meta.get('format')!r}, expected {WEIGHTS_FORMAT!r}")
    return ModelConfig(
        arch=meta["arch"],
        num_points=int(meta["num_points"]),
        batch_norm=meta["batch_norm"] == "true",
    )


def load_checkpoint(path: str, device: torch.device | str = "cpu") -> LandmarkNet:
    """Build the network a wingflow weights file describes and load its tensors (strictly:
    every tensor present with the right shape, none extra)."""
    net = LandmarkNet(read_config(path))
    state = load_file(path)
    # PyTorch's BatchNorm keeps a batch counter that wingflow does not store (it only matters
    # when momentum is None); keep the freshly initialised one.
    for name, buffer in net.state_dict().items():
        if name.endswith("num_batches_tracked"):
            state[name] = buffer
    net.load_state_dict(state, strict=True)
    return net.to(device).eval()
