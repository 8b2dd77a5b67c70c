"""launcher/checkpoint.py on real torch.save files: the facts read without torch, and damage found."""

from __future__ import annotations

import pytest

from launcher import checkpoint


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """A checkpoint shaped like Ultralytics' (a pickled module, an optimizer's state, tensors)."""
    torch = pytest.importorskip("torch")
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    opt = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 3, 8, 8)).sum().backward()
    opt.step()
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    torch.save({"date": "2026-12-01T02:13:00", "version": "8.4.190", "epoch": 6, "best_fitness": 0.41,
                "model": None, "ema": model.half(), "updates": 120, "optimizer": opt.state_dict(),
                "train_args": {"model": "/opt/m/rtdetr-l.pt", "data": "/r/dataset.yaml", "epochs": 80, "batch": 4},
                "train_metrics": {"metrics/mAP50-95(B)": 0.41}, "train_results": {}}, path)
    return path


def test_facts_of_a_real_torch_checkpoint(real):
    assert checkpoint.facts(real) == {"epoch": 6, "train_args": {
        "model": "/opt/m/rtdetr-l.pt", "data": "/r/dataset.yaml", "epochs": 80, "batch": 4}}
    assert checkpoint.zip_damage(real) is None


def test_damage_is_found_and_named(real, tmp_path):
    data = real.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])  # a cut download
    noise = tmp_path / "noise.pt"
    noise.write_bytes(bytes(range(256)) * 64)
    flipped = tmp_path / "flipped.pt"
    i = data.index(b"PK\x03\x04", 100) - 64  # inside a member's data, before the next header
    flipped.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:])
    for bad in (cut, noise):
        assert checkpoint.zip_damage(bad) and checkpoint.zip_damage(bad, crc=False)
        with pytest.raises(ValueError):
            checkpoint.facts(bad)
    assert "CRC" in checkpoint.zip_damage(flipped) or "Bad" in checkpoint.zip_damage(flipped)


def test_a_checkpoint_import_of_this_module_needs_no_torch():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", "import sys, launcher.checkpoint, launcher.setup; "
                          "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ultralytics')))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
