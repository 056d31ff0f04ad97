"""Tests of wingflow_shards: a shard set written by the Rust render stage (the ``rust_shards``
fixture of conftest.py), and a shard written here in the same format (so the reader is also
tested where cargo is unavailable).
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wingflow_shards import AugmentationEpochs, ShardSet, load_shard  # noqa: E402


def set_dirs(root: Path):
    return sorted(p.parent for p in (root / "shards").glob("*/*/index.json"))


def test_reads_every_rust_shard_set(rust_shards):
    dirs = set_dirs(rust_shards)
    assert {d.parent.name for d in dirs} == {"stage1", "stage2"}
    for d in dirs:
        index = json.loads((d / "index.json").read_text())
        ds = ShardSet(d)
        assert len(ds) == index["total_samples"] > 0
        size = {"stage1": 64, "stage2": 128}[d.parent.name]
        assert ds.crop_size == size and ds.scheme == "aflw19" and ds.split == d.name
        meta = ds.metadata()
        assert meta["crop_size"] == str(size) and meta["split"] == d.name
        perm = ds.flip_permutation
        assert sorted(perm) == list(range(19)) and all(perm[perm[i]] == i for i in range(19))
        for i in range(len(ds)):
            s = ds[i]
            assert s["image"].shape == (3, size, size) and s["image"].dtype == torch.uint8
            assert s["landmarks"].shape == (19, 2) and s["landmarks"].dtype == torch.float32
            # sample_index is the sample's global row: shards concatenated in index order.
            assert int(s["sample_index"]) == i
            inside = s["in_crop"]
            xy = s["landmarks"][inside]
            assert bool(((xy >= 0) & (xy < size)).all())
            assert s["image"].float().std() > 1.0  # a rendered face, not zeros
        with pytest.raises(IndexError):
            ds[len(ds)]


def test_dataloader_batches(rust_shards):
    d = next(d for d in set_dirs(rust_shards) if d.parent.name == "stage1" and d.name == "train")
    loader = torch.utils.data.DataLoader(ShardSet(d, channels_first=False), batch_size=3, num_workers=2)
    total = 0
    for batch in loader:
        assert batch["image"].shape[1:] == (64, 64, 3)
        total += batch["image"].shape[0]
    assert total == len(ShardSet(d))


def test_reader_on_a_shard_written_in_python(tmp_path):
    n, s, l = 3, 8, 4
    rng = np.random.default_rng(0)
    tensors = {
        "images": rng.integers(0, 256, (n, s, s, 3), dtype=np.uint8),
        "landmarks": rng.uniform(-1, 9, (n, l, 2)).astype(np.float32),
        "visible": np.array([[1, 0, 1, 1]] * n, dtype=np.uint8),
        "in_crop": np.array([[1, 1, 0, 1]] * n, dtype=np.uint8),
        "sample_index": np.arange(5, 5 + n, dtype=np.int64),
    }
    meta = {
        "format_version": "1",
        "scheme": "toy4",
        "crop_size": str(s),
        "split": "val",
        "flip_permutation": "[1,0,2,3]",
    }
    save_file(tensors, str(tmp_path / "shard-00000.safetensors"), metadata=meta)
    index = {
        "format_version": 1,
        "scheme": "toy4",
        "crop_size": s,
        "split": "val",
        "total_samples": n,
        "config_digest": "x",
        "wingflow_version": "0",
        "shards": [{"file": "shard-00000.safetensors", "samples": n, "bytes": 0, "blake3": ""}],
    }
    (tmp_path / "index.json").write_text(json.dumps(index))
    ds = ShardSet(tmp_path)
    assert len(ds) == n and ds.flip_permutation == [1, 0, 2, 3]
    item = ds[-1]
    assert torch.equal(item["image"], torch.from_numpy(tensors["images"][2]).permute(2, 0, 1))
    assert torch.equal(item["landmarks"], torch.from_numpy(tensors["landmarks"][2]))
    assert item["visible"].tolist() == [True, False, True, True]
    assert item["in_crop"].tolist() == [True, True, False, True]
    assert int(item["sample_index"]) == 7
    assert set(load_shard(tmp_path / "shard-00000.safetensors")) == set(tensors)
    index["format_version"] = 2
    (tmp_path / "index.json").write_text(json.dumps(index))
    with pytest.raises(ValueError, match="format_version"):
        ShardSet(tmp_path)


def test_augmentation_epochs_of_a_rust_training_set(rust_shards):
    train = rust_shards / "shards" / "stage1" / "train"
    epochs = AugmentationEpochs(train)
    assert len(epochs) == 2
    assert epochs(0) == str(train) and epochs(2) == str(train)
    assert epochs(1) == str(train / "augmentation-epoch-001")
    first, second = ShardSet(train), ShardSet(train, epoch=1)
    assert len(first) == len(second) > 0
    a, b = first[0], second[0]
    assert int(a["sample_index"]) == int(b["sample_index"])
    # The same sample, another draw: the crops differ.
    assert not torch.equal(a["image"], b["image"])
    # Validation sets have one epoch.
    assert len(AugmentationEpochs(rust_shards / "shards" / "stage1" / "val")) == 1
