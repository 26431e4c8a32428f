"""Decodes ``cifar10-jpeg.tar.gz`` (``train/<class>/*.jpg``, ``test/<class>/*.jpg``) to an ``.npz``.

Reads the archive with :func:`bayesbinn_jax.data.load_image_folder` (no cache): classes are the
sorted folder names (CIFAR-10's label order); images are taken in sorted file-name order within a
class, decoded with Pillow as RGB uint8. Writes ``x_train, y_train, x_test, y_test`` (labels
uint8), the arrays ``--data-file OUT.npz`` reads. Usage:

    python benchmarks/cifar10_jpeg_to_npz.py ../shared/data/cifar10-jpeg.tar.gz OUT.npz

(``--data-dir ../shared/data/cifar10-jpeg.tar.gz`` reads the archive directly, with a cache.)
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bayesbinn_jax.data.image_folder import load_image_folder  # noqa: E402


def main(source: str, out: str) -> dict[str, np.ndarray]:
  loaded = load_image_folder(source, use_cache=False)
  data = loaded.dataset
  label_dtype = np.uint8 if len(loaded.classes) <= 256 else np.int32
  arrays = {
      "x_train": data.x_train,
      "y_train": data.y_train.astype(label_dtype),
      "x_test": data.x_test,
      "y_test": data.y_test.astype(label_dtype),
  }
  if loaded.mode == "L":
    arrays = {k: v[..., 0] if k.startswith("x_") else v for k, v in arrays.items()}
  np.savez(out, **arrays)
  print(out, {k: v.shape for k, v in arrays.items()}, "classes", list(loaded.classes))
  return arrays


if __name__ == "__main__":
  if len(sys.argv) != 3:
    sys.exit(__doc__)
  main(*sys.argv[1:3])
