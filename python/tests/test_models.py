"""Parity of python/wingflow_models.py with the Rust trainer.

`wingflow-train export-test-case DIR` writes weights, a batch of images and the Rust network's
predictions; the PyTorch twin must reproduce them to 1e-4 px. The binary is found through
$WINGFLOW_TRAIN_BIN, else $CARGO_TARGET_DIR/debug/wingflow-train, else target/debug/.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "python"))

import wingflow_models as wm  # noqa: E402


def trainer_binary() -> Path | None:
    candidates = []
    if os.environ.get("WINGFLOW_TRAIN_BIN"):
        candidates.append(Path(os.environ["WINGFLOW_TRAIN_BIN"]))
    if os.environ.get("CARGO_TARGET_DIR"):
        candidates.append(Path(os.environ["CARGO_TARGET_DIR"]) / "debug" / "wingflow-train")
    candidates.append(ROOT / "target" / "debug" / "wingflow-train")
    return next((c for c in candidates if c.is_file()), None)


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    binary = trainer_binary()
    if binary is None:
        pytest.skip("wingflow-train not built (cargo build -p trainer, or set WINGFLOW_TRAIN_BIN)")
    out = tmp_path_factory.mktemp("cases")
    subprocess.run([str(binary), "export-test-case", str(out)], check=True, capture_output=True)
    names = json.loads((out / "cases.json").read_text())
    assert names, "the exporter wrote no cases"
    return out, names


def test_predictions_match_rust(cases):
    out, names = cases
    for name in names:
        net = wm.load_checkpoint(str(out / f"{name}.safetensors"))
        case = load_file(str(out / f"{name}.case.safetensors"))
        pred = net.predict(case["images"])
        expected = case["predictions"]
        assert pred.shape == expected.shape
        diff = (pred - expected).abs().max().item()
        assert diff <= 1e-4, f"{name}: max |diff| {diff} px"


def test_batch_norm_statistics_are_loaded(cases):
    out, names = cases
    bn_cases = [n for n in names if wm.read_config(str(out / f"{n}.safetensors")).batch_norm]
    assert bn_cases, "no batch-norm case exported"
    for name in bn_cases:
        net = wm.load_checkpoint(str(out / f"{name}.safetensors"))
        running_var = net.blocks[0].bn.running_var
        assert not torch.allclose(running_var, torch.ones_like(running_var))


def test_loading_rejects_a_foreign_file(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "x.safetensors"
    save_file({"w": torch.zeros(2)}, str(path), metadata={"format": "something-else"})
    with pytest.raises(ValueError, match="format"):
        wm.load_checkpoint(str(path))


def test_decode_convention():
    net = wm.LandmarkNet(wm.ModelConfig("cnn6", 2))
    raw = torch.tensor([[0.0, -0.5, 0.5, 0.25]])
    assert net.decode(raw).tolist() == [[[32.0, 0.0], [64.0, 48.0]]]
