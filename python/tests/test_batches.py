"""Tests of wingflow_batches: the batch reader on small shard sets written here in the shard
format (so they always run), and on the Rust-written sets of conftest's ``rust_shards``."""

import json
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import wingflow_batches  # noqa: E402
from wingflow_batches import ShardBatches  # noqa: E402
from wingflow_shards import ShardSet  # noqa: E402

CROP = 8
POINTS = 5


def write_shard_set(
    folder: Path, counts: List[int], first_index: int = 0, seed: int = 0, occluded_in: Tuple[int, ...] = ()
) -> Path:
    """A shard set of ``len(counts)`` shards holding ``counts[k]`` random samples each, in the
    layout the Rust render stage writes; sample_index runs from ``first_index``; the shards
    numbered in ``occluded_in`` get an ``occluded`` tensor (random flags)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    entries, start = [], first_index
    for k, n in enumerate(counts):
        tensors = {
            "images": rng.integers(0, 256, (n, CROP, CROP, 3), dtype=np.uint8),
            "landmarks": rng.uniform(0, CROP, (n, POINTS, 2)).astype(np.float32),
            "visible": rng.integers(0, 2, (n, POINTS), dtype=np.uint8),
            "in_crop": rng.integers(0, 2, (n, POINTS), dtype=np.uint8),
            "sample_index": np.arange(start, start + n, dtype=np.int64),
        }
        if k in occluded_in:
            tensors["occluded"] = rng.integers(0, 2, (n, POINTS), dtype=np.uint8)
        meta = {
            "format_version": "1",
            "scheme": "toy5",
            "crop_size": str(CROP),
            "split": "train",
            "flip_permutation": "[1,0,2,4,3]",
        }
        name = f"shard-{k:05d}.safetensors"
        save_file(tensors, str(folder / name), metadata=meta)
        entries.append({"file": name, "samples": n, "bytes": (folder / name).stat().st_size, "blake3": ""})
        start += n
    index = {
        "format_version": 1,
        "scheme": "toy5",
        "crop_size": CROP,
        "split": "train",
        "total_samples": sum(counts),
        "config_digest": "x",
        "wingflow_version": "0",
        "shards": entries,
    }
    (folder / "index.json").write_text(json.dumps(index))
    return folder


def loader_batches(batches: ShardBatches, num_workers: int) -> List[dict]:
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=num_workers)
    return list(loader)


def indices(batch: dict) -> List[int]:
    return batch["sample_index"].tolist()


def check_matches_per_sample_reader(reader: ShardSet, batch: dict) -> None:
    """Every row of ``batch`` equals what ``reader`` returns for the same sample (sample_index
    is the sample's number in these sets)."""
    assert batch["image"].dtype == torch.uint8 and batch["landmarks"].dtype == torch.float32
    assert batch["visible"].dtype == torch.bool and batch["in_crop"].dtype == torch.bool
    assert batch["occluded"].dtype == torch.bool
    for row, i in enumerate(indices(batch)):
        sample = reader[i]
        for key in ("image", "landmarks", "visible", "in_crop", "occluded", "sample_index"):
            assert torch.equal(batch[key][row], sample[key]), (key, i)


@pytest.mark.parametrize("counts", [[7, 9, 8], [24]])
def test_every_sample_once_across_two_ranks_and_two_workers(tmp_path, counts):
    folder = write_shard_set(tmp_path / "set", counts)
    per_rank = []
    for rank in (0, 1):
        batches = ShardBatches(folder, batch_size=4, seed=3, rank=rank, world_size=2)
        got = loader_batches(batches, num_workers=2)
        assert len(got) == len(batches) == 3
        assert all(len(indices(b)) == 4 for b in got)
        # The DataLoader takes batches from its workers in turn: the rank's own order.
        assert [indices(b) for b in got] == [sorted(b.tolist()) for b in batches.rank_batches()]
        per_rank.append([i for b in got for i in indices(b)])
    assert sorted(per_rank[0] + per_rank[1]) == list(range(24))


def test_padding_wraps_around_and_drop_last_cuts(tmp_path):
    folder = write_shard_set(tmp_path / "set", [7, 9, 7])  # 23 samples
    seen, sizes = [], []
    for rank in (0, 1):
        batches = ShardBatches(folder, batch_size=5, seed=1, rank=rank, world_size=2)
        got = loader_batches(batches, num_workers=2)
        sizes.append([len(indices(b)) for b in got])
        seen += [i for b in got for i in indices(b)]
    # 24 = 23 padded to a multiple of 2; 12 per rank = batches of 5, 5, 2 on both ranks.
    assert sizes == [[5, 5, 2], [5, 5, 2]]
    assert set(seen) == set(range(23)) and len(seen) == 24
    first = int(np.random.default_rng([1, 0]).permutation(23)[0])
    assert [i for i in set(seen) if seen.count(i) == 2] == [first]

    kept = []
    for rank in (0, 1):
        batches = ShardBatches(folder, batch_size=5, seed=1, rank=rank, world_size=2, drop_last=True)
        got = loader_batches(batches, num_workers=2)
        assert len(got) == len(batches) == 2 and all(len(indices(b)) == 5 for b in got)
        kept += [i for b in got for i in indices(b)]
    assert len(set(kept)) == len(kept) == 20

    alone = ShardBatches(folder, batch_size=5, shuffle=False, world_size=1)
    assert [indices(b) for b in alone] == [list(range(i, min(i + 5, 23))) for i in range(0, 23, 5)]


def test_permutation_follows_seed_and_epoch(tmp_path):
    folder = write_shard_set(tmp_path / "set", [10, 14])

    def order(seed: int, epoch: Optional[int]) -> List[int]:
        batches = ShardBatches(folder, batch_size=3, seed=seed, rank=1, world_size=2)
        if epoch is not None:
            batches.set_epoch(epoch)
        return [i for b in loader_batches(batches, num_workers=2) for i in indices(b)]

    assert order(5, None) == order(5, 0)
    assert order(5, 1) == order(5, 1)
    assert order(5, 1) != order(5, 0)
    assert order(6, 1) != order(5, 1)
    # set_epoch on a dataset that has already been iterated takes effect in the next epoch.
    batches = ShardBatches(folder, batch_size=3, seed=5, rank=1, world_size=2)
    epochs = []
    for epoch in range(3):
        batches.set_epoch(epoch)
        epochs.append([i for b in loader_batches(batches, num_workers=2) for i in indices(b)])
    assert epochs == [order(5, 0), order(5, 1), order(5, 2)]
    with pytest.raises(ValueError, match="epoch"):
        batches.set_epoch(-1)


@pytest.mark.parametrize("channels_first", [True, False])
def test_batches_equal_the_per_sample_reader(tmp_path, channels_first):
    folder = write_shard_set(tmp_path / "set", [6, 1, 9])
    reader = ShardSet(folder, channels_first=channels_first)
    batches = ShardBatches(folder, batch_size=5, seed=2, channels_first=channels_first)
    got = list(batches)
    assert sorted(i for b in got for i in indices(b)) == list(range(16))
    for batch in got:
        shape = (3, CROP, CROP) if channels_first else (CROP, CROP, 3)
        assert batch["image"].shape[1:] == shape
        check_matches_per_sample_reader(reader, batch)
    # A batch spanning all three shards, given out of order, comes back in index order.
    mixed = batches.gather([12, 0, 6, 3])
    assert indices(mixed) == [0, 3, 6, 12]
    check_matches_per_sample_reader(reader, mixed)
    with pytest.raises(IndexError):
        batches.gather([16])


def test_batches_equal_the_per_sample_reader_on_rust_shards(rust_shards):
    sets = sorted(p.parent for p in (rust_shards / "shards").glob("*/*/index.json"))
    assert sets
    for folder in sets:
        reader = ShardSet(folder)
        seen, counts = set(), []
        for rank in (0, 1):
            batches = ShardBatches(folder, batch_size=4, seed=7, rank=rank, world_size=2)
            got = loader_batches(batches, num_workers=2)
            counts.append(len(got))
            for batch in got:
                assert batch["image"].shape[1:] == (3, reader.crop_size, reader.crop_size)
                check_matches_per_sample_reader(reader, batch)
                seen.update(indices(batch))
        assert counts[0] == counts[1] == len(batches)
        assert seen == set(range(len(reader)))


def test_rank_and_world_size_default_from_torch_distributed_and_are_checked(tmp_path, monkeypatch):
    folder = write_shard_set(tmp_path / "set", [5])
    assert (ShardBatches(folder, 2).rank, ShardBatches(folder, 2).world_size) == (0, 1)
    monkeypatch.setattr(wingflow_batches.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(wingflow_batches.dist, "get_rank", lambda: 2)
    monkeypatch.setattr(wingflow_batches.dist, "get_world_size", lambda: 3)
    batches = ShardBatches(folder, 2)
    assert (batches.rank, batches.world_size) == (2, 3)
    assert ShardBatches(folder, 2, rank=0).rank == 0
    with pytest.raises(ValueError, match="rank 3 of world_size 3"):
        ShardBatches(folder, 2, rank=3)
    with pytest.raises(ValueError, match="batch_size"):
        ShardBatches(folder, 0)


def test_a_callable_set_dir_reads_each_epochs_set(tmp_path):
    write_shard_set(tmp_path / "epoch-0", [4, 4], first_index=0, seed=0)
    write_shard_set(tmp_path / "epoch-1", [3], first_index=100, seed=1)
    batches = ShardBatches(lambda epoch: tmp_path / f"epoch-{epoch}", batch_size=3, shuffle=False)
    assert len(batches) == 3
    assert [i for b in batches for i in indices(b)] == list(range(8))
    batches.set_epoch(1)
    assert len(batches) == 1 and batches.shards.set_dir == str(tmp_path / "epoch-1")
    assert [indices(b) for b in loader_batches(batches, num_workers=0)] == [[100, 101, 102]]


def test_occluded_flags_come_from_the_shards_that_have_them(tmp_path):
    folder = write_shard_set(tmp_path / "set", [4, 5, 3], occluded_in=(1,))
    reader = ShardSet(folder)
    (batch,) = list(ShardBatches(folder, batch_size=12, shuffle=False))
    check_matches_per_sample_reader(reader, batch)
    with safe_open(str(folder / "shard-00001.safetensors"), framework="numpy") as f:
        stored = f.get_tensor("occluded").astype(bool)
    assert torch.equal(batch["occluded"][4:9], torch.from_numpy(stored))
    assert stored.any(), "the random flags hold an occluded point"
    # Shards without the tensor: no point is occluded.
    assert not batch["occluded"][:4].any() and not batch["occluded"][9:].any()


def test_bad_shards_are_reported_by_file(tmp_path):
    folder = write_shard_set(tmp_path / "set", [3, 3])
    shard = folder / "shard-00001.safetensors"

    def rewrite(tensors: dict) -> None:
        save_file(tensors, str(shard), metadata={"format_version": "1"})

    good = {name: np.array(array) for name, array in wingflow_batches.map_shard(shard, 3, CROP).items()}
    cases = [
        ({k: v for k, v in good.items() if k != "in_crop"}, "'in_crop' missing"),
        (dict(good, landmarks=good["landmarks"].astype(np.float64)), "'landmarks' is F64, expected F32"),
        (dict(good, images=good["images"][:, :4]), r"'images' has shape \[3, 4, 8, 3\]"),
        (dict(good, visible=good["visible"][:, :4]), r"'visible' has shape \[3, 4\], expected \[3, 5\]"),
    ]
    for tensors, message in cases:
        rewrite(tensors)
        batches = ShardBatches(folder, 6, shuffle=False)
        with pytest.raises(ValueError, match=f"shard-00001.safetensors: tensor {message}"):
            list(batches)
    data = shard.read_bytes()
    shard.write_bytes(data[:-10])
    with pytest.raises(ValueError, match="shard-00001.safetensors: tensor .* inside the file"):
        list(ShardBatches(folder, 6, shuffle=False))
    shard.write_bytes(data[:4])
    with pytest.raises(ValueError, match="shard-00001.safetensors: 4 bytes"):
        list(ShardBatches(folder, 6, shuffle=False))
    fewer_points = {name: good[name][:, :4] for name in ("landmarks", "visible", "in_crop")}
    rewrite(dict(good, **fewer_points))
    with pytest.raises(ValueError, match="shard-00001.safetensors: 4 landmarks per sample, but other"):
        list(ShardBatches(folder, 6, shuffle=False))
