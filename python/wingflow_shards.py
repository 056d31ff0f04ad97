"""Read wingflow shard sets from PyTorch.

A shard set is one directory, ``<out_root>/shards/<stage>/<split>/``, written by wingflow's
render stage. It holds ``index.json`` (format version, scheme, crop size, split, total sample
count, and per shard its file name, sample count, size and blake3), ``samples.parquet`` (one row
per sample: source id, replica, augmentation parameters, crop matrix, pose bin) and the shards,
``shard-00000.safetensors`` ..., each with the tensors

- ``images``       uint8   [N, S, S, 3]  RGB, row-major, not normalised
- ``landmarks``    float32 [N, L, 2]     crop pixel coordinates; pixel (i, j) covers
                                         [i, i+1) x [j, j+1), so its centre is (i+0.5, j+0.5)
- ``visible``      uint8   [N, L]        annotation visibility
- ``in_crop``      uint8   [N, L]        the point lies inside the crop
- ``sample_index`` int64   [N]           the sample's row in ``samples.parquet``
- ``occluded``     uint8   [N, L]        labelled but occluded (visible, trained and scored, with
                                         its coordinates); only in shards that have such a point,
                                         absent meaning none is

and ``__metadata__`` with ``format_version``, ``scheme``, ``crop_size``, ``split`` and
``flip_permutation`` (a JSON list: after mirroring x, point i takes old point perm[i]).

Usage::

    from wingflow_shards import ShardSet
    ds = ShardSet("out/shards/stage1/train")
    loader = torch.utils.data.DataLoader(ds, batch_size=8, shuffle=True, num_workers=4)

Shards are opened lazily (per DataLoader worker) and read one sample at a time through
``safetensors.safe_open``, so memory stays small whatever the set's size.

**Augmentation epochs.** A training set rendered with ``[render] epochs = E`` holds E shard
sets with the same samples and their own augmentation draws: epoch 0 in the set's folder (its
``index.json`` lists ``augmentation_epochs: E``), epoch e >= 1 in ``augmentation-epoch-EEE/``.
``ShardSet(dir, epoch=e)`` reads epoch e mod E; :class:`AugmentationEpochs` names the folder of
each pass, so fresh crops come on every pass::

    epochs = AugmentationEpochs("out/shards/stage1/train")
    for pass_ in range(30):
        ds = ShardSet(epochs(pass_))          # pass p reads epoch p mod E
        # or: wingflow_batches.ShardBatches(epochs, ...) with set_epoch(pass_)
"""

from __future__ import annotations

import bisect
import json
import os
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch
from safetensors import safe_open

#: The shard layout version this reader understands.
FORMAT_VERSION = 1

TENSORS = ("images", "landmarks", "visible", "in_crop", "sample_index")
#: The tensor only shards with a labelled-but-occluded point hold (absent: no point is).
OCCLUDED = "occluded"


def augmentation_epoch_dir(set_dir: str | os.PathLike, epoch: int) -> str:
    """The folder of augmentation epoch ``epoch`` of the shard set ``set_dir`` (its epoch 0)."""
    set_dir = os.fspath(set_dir)
    return set_dir if epoch == 0 else os.path.join(set_dir, f"augmentation-epoch-{epoch:03d}")


class AugmentationEpochs:
    """The augmentation epochs of a training shard set: ``epochs(p)`` is the folder pass ``p``
    reads (epoch ``p mod E``, E from epoch 0's ``index.json``; 1 for sets without epochs).
    Picklable, so DataLoader workers may receive it."""

    def __init__(self, set_dir: str | os.PathLike) -> None:
        self.set_dir = os.fspath(set_dir)
        with open(os.path.join(self.set_dir, "index.json"), encoding="utf-8") as f:
            self.count: int = int(json.load(f).get("augmentation_epochs", 1))
        if self.count < 1:
            raise ValueError(f"{self.set_dir}/index.json: augmentation_epochs must be >= 1")

    def __len__(self) -> int:
        return self.count

    def __call__(self, pass_number: int) -> str:
        return augmentation_epoch_dir(self.set_dir, pass_number % self.count)


class ShardSet(torch.utils.data.Dataset):
    """All samples of one shard set, in index order (shard by shard, row by row).

    ``epoch`` picks an augmentation epoch of a training set (``epoch mod E``; 0, the default,
    is the set's own folder). ``dataset[i]`` is a dict of tensors: ``image`` uint8 [3, S, S] (``channels_first=True``,
    the default) or [S, S, 3]; ``landmarks`` float32 [L, 2]; ``visible``, ``in_crop`` and
    ``occluded`` bool [L]; ``sample_index`` int64 scalar. ``transform``, if given, is applied to
    that dict.
    """

    def __init__(
        self,
        set_dir: str | os.PathLike,
        transform: Optional[Callable[[Dict[str, torch.Tensor]], Any]] = None,
        channels_first: bool = True,
        epoch: int = 0,
    ) -> None:
        if epoch:
            set_dir = AugmentationEpochs(set_dir)(epoch)
        self.set_dir = os.fspath(set_dir)
        with open(os.path.join(self.set_dir, "index.json"), encoding="utf-8") as f:
            self.index: Dict[str, Any] = json.load(f)
        version = self.index.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(
                f"{self.set_dir}/index.json: format_version {version}, this reader reads {FORMAT_VERSION}"
            )
        self.crop_size: int = int(self.index["crop_size"])
        self.scheme: str = self.index["scheme"]
        self.split: str = self.index["split"]
        self.files: List[str] = [os.path.join(self.set_dir, s["file"]) for s in self.index["shards"]]
        counts = [int(s["samples"]) for s in self.index["shards"]]
        # starts[k] = index of shard k's first sample.
        self.starts: List[int] = np.concatenate([[0], np.cumsum(counts)]).astype(int).tolist()
        if self.starts[-1] != int(self.index["total_samples"]):
            raise ValueError(f"{self.set_dir}/index.json: shard counts do not add up to total_samples")
        self.transform = transform
        self.channels_first = channels_first
        self._handles: Dict[int, Any] = {}
        self._has_occluded: Dict[int, bool] = {}

    def __len__(self) -> int:
        return self.starts[-1]

    def __getstate__(self) -> Dict[str, Any]:
        # Open files do not cross process boundaries; each DataLoader worker reopens lazily.
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def _shard(self, k: int):
        handle = self._handles.get(k)
        if handle is None:
            handle = safe_open(self.files[k], framework="numpy")
            self._handles[k] = handle
        return handle

    def metadata(self, shard: int = 0) -> Dict[str, str]:
        """The ``__metadata__`` of one shard (format version, scheme, crop size, split, flip
        permutation as JSON)."""
        return dict(self._shard(shard).metadata() or {})

    @property
    def flip_permutation(self) -> List[int]:
        """After mirroring x, point i takes old point ``flip_permutation[i]``."""
        return json.loads(self.metadata()["flip_permutation"])

    def __getitem__(self, i: int):
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {len(self)} samples")
        k = bisect.bisect_right(self.starts, i) - 1
        row = i - self.starts[k]
        shard = self._shard(k)
        arrays = {name: shard.get_slice(name)[row : row + 1][0] for name in TENSORS}
        if k not in self._has_occluded:
            self._has_occluded[k] = OCCLUDED in shard.keys()
        if self._has_occluded[k]:
            occluded = shard.get_slice(OCCLUDED)[row : row + 1][0].astype(bool)
        else:
            occluded = np.zeros(arrays["visible"].shape, dtype=bool)
        image = torch.from_numpy(np.ascontiguousarray(arrays["images"]))
        if self.channels_first:
            image = image.permute(2, 0, 1).contiguous()
        sample = {
            "image": image,
            "landmarks": torch.from_numpy(np.ascontiguousarray(arrays["landmarks"])),
            "visible": torch.from_numpy(arrays["visible"].astype(bool)),
            "in_crop": torch.from_numpy(arrays["in_crop"].astype(bool)),
            "occluded": torch.from_numpy(occluded),
            "sample_index": torch.tensor(int(arrays["sample_index"]), dtype=torch.int64),
        }
        return self.transform(sample) if self.transform is not None else sample


def load_shard(path: str | os.PathLike) -> Dict[str, np.ndarray]:
    """Every tensor of one shard file as numpy arrays (the whole shard in memory)."""
    with safe_open(os.fspath(path), framework="numpy") as f:
        return {name: f.get_tensor(name) for name in f.keys()}
