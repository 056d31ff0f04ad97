"""Whole batches from wingflow shard sets, for (distributed) PyTorch training.

``ShardBatches`` is an ``IterableDataset`` that yields ready-made batches. Each shard file (the
layout is described in ``wingflow_shards``) is memory-mapped once per process, and a batch is
gathered with one numpy fancy-indexing copy per tensor and per shard it touches, instead of
reading and collating one sample at a time as ``wingflow_shards.ShardSet`` does. Use it with
``batch_size=None`` so that the DataLoader passes the batches through::

    from wingflow_batches import ShardBatches
    batches = ShardBatches("out/shards/stage1/train", batch_size=64, seed=1)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=4, pin_memory=True)
    for epoch in range(epochs):
        batches.set_epoch(epoch)
        for batch in loader:
            ...

Every process of a DDP job builds the same ``ShardBatches``; ``rank`` and ``world_size``
default to ``torch.distributed``'s when a process group is initialised (else 0 and 1).
"""

from __future__ import annotations

import json
import math
import mmap
import os
import struct
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
import torch.distributed as dist

from wingflow_shards import OCCLUDED, TENSORS, ShardSet

#: The safetensors dtype code, numpy dtype and torch dtype of each shard tensor.
SHARD_DTYPES = {
    "images": ("U8", np.dtype("<u1"), torch.uint8),
    "landmarks": ("F32", np.dtype("<f4"), torch.float32),
    "visible": ("U8", np.dtype("<u1"), torch.uint8),
    "in_crop": ("U8", np.dtype("<u1"), torch.uint8),
    "sample_index": ("I64", np.dtype("<i8"), torch.int64),
    OCCLUDED: ("U8", np.dtype("<u1"), torch.uint8),
}

#: Every batch tensor, in buffer order: the shard tensors and ``occluded`` (zeros where a shard
#: has no such tensor).
BATCH_TENSORS = (*TENSORS, OCCLUDED)

SetDir = Union[str, os.PathLike]


def map_shard(path: SetDir, samples: int, crop_size: int) -> Dict[str, np.ndarray]:
    """The tensors of one shard file as read-only numpy arrays over one memory map of it (the
    five every shard has, and ``occluded`` where the shard has it).

    ``samples`` and ``crop_size`` are what the set's ``index.json`` says; the file's header must
    agree with them (and with the tensor layout of ``wingflow_shards``), else ``ValueError``
    naming the file.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 8:
            raise ValueError(f"{path}: {size} bytes, too short for a safetensors file")
        (header_len,) = struct.unpack("<Q", f.read(8))
        if 8 + header_len > size:
            raise ValueError(f"{path}: header of {header_len} bytes runs past the end of the file")
        try:
            header = json.loads(f.read(header_len))
        except ValueError as e:
            raise ValueError(f"{path}: unreadable safetensors header: {e}") from e
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    data_start = 8 + header_len
    arrays: Dict[str, np.ndarray] = {}
    for name, (code, dtype, _) in SHARD_DTYPES.items():
        entry = header.get(name)
        if name == OCCLUDED and entry is None:
            continue
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: tensor {name!r} missing")
        if entry.get("dtype") != code:
            raise ValueError(f"{path}: tensor {name!r} is {entry.get('dtype')}, expected {code}")
        shape = tuple(int(d) for d in entry["shape"])
        begin, end = (int(o) for o in entry["data_offsets"])
        if end - begin != math.prod(shape) * dtype.itemsize or data_start + end > size:
            raise ValueError(
                f"{path}: tensor {name!r} has data_offsets [{begin}, {end}], which do not hold "
                f"shape {list(shape)} of {code} inside the file"
            )
        arrays[name] = np.ndarray(shape, dtype=dtype, buffer=mapped, offset=data_start + begin)
    landmarks = arrays["landmarks"].shape
    points = landmarks[1] if len(landmarks) == 3 else -1
    expected = {
        "images": (samples, crop_size, crop_size, 3),
        "landmarks": (samples, points, 2),
        "visible": (samples, points),
        "in_crop": (samples, points),
        "sample_index": (samples,),
        OCCLUDED: (samples, points),
    }
    for name, shape in expected.items():
        if name in arrays and arrays[name].shape != shape:
            raise ValueError(
                f"{path}: tensor {name!r} has shape {list(arrays[name].shape)}, expected "
                f"{list(shape)} (index.json: {samples} samples, crop size {crop_size})"
            )
    return arrays


class ShardBatches(torch.utils.data.IterableDataset):
    """One rank's batches of a shard set, epoch by epoch.

    **Order.** Epoch ``e`` visits the set's samples (numbered 0..N-1 in index order, as
    ``ShardSet`` numbers them) in the permutation drawn by
    ``numpy.random.default_rng([seed, e])`` (in index order when ``shuffle=False``), so every
    rank draws the same permutation. ``set_epoch(e)`` chooses the epoch, as with
    ``DistributedSampler``: call it before iterating, in every rank.

    **Split across ranks, then workers.** Rank ``r`` of ``world_size`` W takes positions
    ``r, r+W, r+2W, ...`` of the (padded or cut) permutation and cuts them into batches of
    ``batch_size`` in that order. DataLoader worker ``w`` of ``num_workers`` yields that rank's
    batches ``w, w+num_workers, ...``; the DataLoader takes them from its workers in turn, so the
    rank sees its batches in the same order whatever ``num_workers`` is.

    **Tail rule** (every rank gets the same number of batches):

    - ``drop_last=False`` (the default): the permutation is extended by wrapping around to its
      start until its length is a multiple of W, so fewer than W samples are read twice in an
      epoch (none when W divides N). Each rank has ``ceil(N / W)`` samples and
      ``ceil(ceil(N / W) / batch_size)`` batches; the last batch of every rank has the same
      size, which is smaller than ``batch_size`` when ``batch_size`` does not divide
      ``ceil(N / W)``. With W = 1 every sample is read exactly once.
    - ``drop_last=True``: the permutation is cut to the largest multiple of
      ``W * batch_size``, so every batch is full, each rank has ``N // (W * batch_size)``
      batches and each sample is read at most once; which samples are left out changes with
      the epoch when shuffling.

    **Batches** are dicts of tensors: ``image`` uint8 [B, 3, S, S] (``channels_first=True``, the
    default: a channels-last view of the stored [B, S, S, 3] rows, no extra copy; call
    ``.contiguous()`` where a contiguous tensor is needed) or [B, S, S, 3]; ``landmarks``
    float32 [B, L, 2]; ``visible``, ``in_crop`` and ``occluded`` bool [B, L]; ``sample_index``
    int64 [B] —
    the values ``ShardSet`` gives for the same samples. Within a batch, samples come in index
    order (shard by shard), so each shard's rows are gathered in one copy; the permutation
    decides which samples share a batch and the order of the batches. ``transform``, if
    given, is applied to each batch dict.

    **Per-epoch shard sets.** ``set_dir`` is a shard set folder, or a callable
    ``epoch -> folder`` naming the shard set to read in that epoch. The callable is the place
    for shard sets re-rendered with fresh augmentation per epoch: this class assumes only that
    each epoch's folder is a shard set (an ``index.json`` and its shards); the sets may differ
    in size, and ``len()`` follows the current epoch's. DataLoader workers started with the
    ``spawn`` method need a picklable callable (a module-level function, not a lambda).

    Shard files are mapped lazily in each process (the maps do not cross process boundaries).
    A DataLoader's workers get a copy of the dataset when they start, so with
    ``persistent_workers=True`` they would keep the epoch they started with: leave it off (the
    default). The tensors of a batch are views of one buffer, so a worker hands a batch over
    as one block of shared memory.
    """

    def __init__(
        self,
        set_dir: Union[SetDir, Callable[[int], SetDir]],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_last: bool = False,
        rank: Optional[int] = None,
        world_size: Optional[int] = None,
        channels_first: bool = True,
        transform: Optional[Callable[[Dict[str, torch.Tensor]], Any]] = None,
    ) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, not {batch_size}")
        if seed < 0:
            raise ValueError(f"seed must be non-negative, not {seed}")
        distributed = dist.is_available() and dist.is_initialized()
        if world_size is None:
            world_size = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} of world_size {world_size}: need 0 <= rank < world_size")
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world_size = world_size
        self.channels_first = channels_first
        self.transform = transform
        self._dir_for_epoch = set_dir if callable(set_dir) else None
        self._fixed_dir = None if callable(set_dir) else os.fspath(set_dir)
        #: The current epoch's shard set, read one sample at a time (index, metadata, samples).
        self.shards: Optional[ShardSet] = None
        self._open_set(0)
        self.epoch = 0

    def _open_set(self, epoch: int) -> None:
        """Reads the index of ``epoch``'s shard set, unless it is the set already open."""
        if self._dir_for_epoch is not None:
            set_dir = os.fspath(self._dir_for_epoch(epoch))
        else:
            set_dir = self._fixed_dir
        if self.shards is not None and self.shards.set_dir == set_dir:
            return
        shards = ShardSet(set_dir, channels_first=self.channels_first)
        if len(shards) == 0:
            raise ValueError(f"{set_dir}/index.json: the shard set holds no samples")
        self.shards = shards
        self._starts = np.asarray(self.shards.starts, dtype=np.int64)
        self._maps: Dict[int, Dict[str, np.ndarray]] = {}
        self._points: Optional[int] = None
        # Per batch length: (buffer size, [(tensor, start, end, dtype, shape)]) for _batch_tensors.
        self._layouts: Dict[int, Tuple[int, List[tuple]]] = {}

    def set_epoch(self, epoch: int) -> None:
        """Chooses the epoch whose permutation (and, with a callable ``set_dir``, shard set)
        the next iteration reads."""
        if epoch < 0:
            raise ValueError(f"epoch must be non-negative, not {epoch}")
        self._open_set(epoch)
        self.epoch = int(epoch)

    def __getstate__(self) -> Dict[str, Any]:
        # Memory maps do not cross process boundaries; each DataLoader worker maps lazily.
        state = self.__dict__.copy()
        state["_maps"] = {}
        return state

    def _rank_samples(self) -> int:
        """Samples per rank in the current epoch, by the tail rule."""
        n, w = len(self.shards), self.world_size
        if self.drop_last:
            return n // (w * self.batch_size) * self.batch_size
        return -(-n // w)

    def __len__(self) -> int:
        """Batches per rank in the current epoch (the same for every rank)."""
        return -(-self._rank_samples() // self.batch_size)

    def rank_batches(self) -> List[np.ndarray]:
        """This rank's batches in the current epoch, as arrays of sample numbers (index order,
        as ``ShardSet`` numbers them), before the split across DataLoader workers."""
        n, w = len(self.shards), self.world_size
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(n)
        else:
            order = np.arange(n)
        # Cut (drop_last) or extended by wrapping around to its start (padding).
        order = np.resize(order, self._rank_samples() * w)
        mine = order[self.rank :: w]
        return [mine[i : i + self.batch_size] for i in range(0, len(mine), self.batch_size)]

    def __iter__(self) -> Iterator[Any]:
        batches = self.rank_batches()
        worker = torch.utils.data.get_worker_info()
        if worker is not None:
            batches = batches[worker.id :: worker.num_workers]
        for samples in batches:
            batch = self.gather(samples)
            yield self.transform(batch) if self.transform is not None else batch

    def _mapped(self, k: int) -> Dict[str, np.ndarray]:
        arrays = self._maps.get(k)
        if arrays is None:
            path = self.shards.files[k]
            samples = int(self._starts[k + 1] - self._starts[k])
            arrays = map_shard(path, samples, self.shards.crop_size)
            points = arrays["landmarks"].shape[1]
            if self._points is None:
                self._points = points
            elif points != self._points:
                raise ValueError(
                    f"{path}: {points} landmarks per sample, but other shards of the set have "
                    f"{self._points}"
                )
            self._maps[k] = arrays
        return arrays

    def gather(self, samples: Any) -> Dict[str, torch.Tensor]:
        """The batch of the given sample numbers (index order, as ``ShardSet`` numbers them),
        in ascending order, as the dict described in the class docstring (without
        ``transform``)."""
        samples = np.sort(np.asarray(samples, dtype=np.int64).reshape(-1))
        n = len(self.shards)
        if len(samples) == 0:
            raise ValueError("a batch needs at least one sample")
        if samples[0] < 0 or samples[-1] >= n:
            raise IndexError(f"sample numbers must lie in [0, {n}), got {samples[0]}..{samples[-1]}")
        shard_of = np.searchsorted(self._starts, samples, side="right") - 1
        cuts = [0, *(np.flatnonzero(np.diff(shard_of)) + 1).tolist(), len(samples)]
        tensors = self._batch_tensors(len(samples), self._mapped(int(shard_of[0])))
        out = {name: tensor.numpy() for name, tensor in tensors.items()}
        for lo, hi in zip(cuts[:-1], cuts[1:]):
            k = int(shard_of[lo])
            rows = samples[lo:hi] - self._starts[k]
            arrays = self._mapped(k)
            for name in TENSORS:
                # Rows are in range by construction; mode="clip" lets take write straight to out.
                np.take(arrays[name], rows, axis=0, out=out[name][lo:hi], mode="clip")
            if OCCLUDED in arrays:
                np.take(arrays[OCCLUDED], rows, axis=0, out=out[OCCLUDED][lo:hi], mode="clip")
            else:
                out[OCCLUDED][lo:hi] = 0
        for name in ("visible", "in_crop", OCCLUDED):
            np.not_equal(out[name], 0, out=out[name].view(np.bool_))
        image = tensors["images"]
        return {
            "image": image.permute(0, 3, 1, 2) if self.channels_first else image,
            "landmarks": tensors["landmarks"],
            "visible": tensors["visible"].view(torch.bool),
            "in_crop": tensors["in_crop"].view(torch.bool),
            "occluded": tensors[OCCLUDED].view(torch.bool),
            "sample_index": tensors["sample_index"],
        }

    def _batch_tensors(self, n: int, arrays: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
        """Empty tensors for ``n`` rows shaped like ``arrays``' rows, all views of one buffer
        (each 8-byte aligned), so that a DataLoader worker hands a batch over as one block of
        shared memory rather than one per tensor."""
        layout = self._layouts.get(n)
        if layout is None:
            layout, start = [], 0
            for name in BATCH_TENSORS:
                # `occluded` is shaped like `visible` (a shard may lack it).
                row = arrays["visible" if name == OCCLUDED else name]
                shape = (n, *row.shape[1:])
                nbytes = math.prod(shape) * row.itemsize
                layout.append((name, start, start + nbytes, SHARD_DTYPES[name][2], shape))
                start += -(-nbytes // 8) * 8
            layout = self._layouts[n] = (start, layout)
        size, parts = layout
        buffer = torch.empty(size, dtype=torch.uint8)
        return {name: buffer[lo:hi].view(dtype).view(shape) for name, lo, hi, dtype, shape in parts}
