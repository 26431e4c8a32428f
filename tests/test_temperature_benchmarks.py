"""The issue-30 benchmark scripts: the far-OOD set (benchmarks/ood_cifar_gray.py) and the sweep
script's syntax (benchmarks/temperature_sweep.sh)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))

import ood_cifar_gray  # noqa: E402


def _jpeg(rgb):
  buffer = io.BytesIO()
  Image.fromarray(np.full((32, 32, 3), rgb, np.uint8)).save(buffer, format="JPEG", quality=95)
  return buffer.getvalue()


def _archive(path, files):
  with tarfile.open(path, "w:gz") as tar:
    for name, payload in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(payload)
      tar.addfile(info, io.BytesIO(payload))
  return str(path)


def test_cifar_test_images_become_gray_28x28(tmp_path):
  # Uniform colours: luma = 0.299 R + 0.587 G + 0.114 B, e.g. (200, 100, 50) -> 59.8 + 58.7 + 5.7 = 124.2.
  archive = _archive(tmp_path / "c.tar.gz", {
      "test/cat/0001.jpg": _jpeg((200, 100, 50)),
      "test/airplane/0000.jpg": _jpeg((0, 0, 255)),      # 29.07
      "train/cat/0000.jpg": _jpeg((255, 255, 255)),      # not a test image: left out
      "test/cat/readme.txt": b"not an image",
  })
  x = ood_cifar_gray.cifar_test_gray(archive)
  assert x.shape == (2, 28, 28) and x.dtype == np.uint8
  # Sorted by path: airplane before cat.
  assert abs(float(x[0].mean()) - 29.07) < 2 and abs(float(x[1].mean()) - 124.2) < 2
  # --limit takes classes round-robin: one image, the first class's.
  assert ood_cifar_gray.cifar_test_gray(archive, limit=1).shape == (1, 28, 28)


def test_the_script_writes_x(tmp_path):
  archive = _archive(tmp_path / "c.tar.gz", {"test/dog/0.jpg": _jpeg((10, 20, 30))})
  out = tmp_path / "ood.npz"
  subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "ood_cifar_gray.py"), archive, str(out)],
                 check=True, capture_output=True)
  with np.load(out) as data:
    assert data["x"].shape == (1, 28, 28)


def test_sweep_script_parses_and_names_every_temperature():
  script = os.path.join(REPO, "benchmarks", "temperature_sweep.sh")
  subprocess.run(["bash", "-n", script], check=True)
  text = open(script).read()
  assert 'TEMPERATURES="${TEMPERATURES:-1e-10 1e-4 1e-2 1e-1}"' in text
  assert "test_samples=$C" in text and "for C in 10 100" in text
