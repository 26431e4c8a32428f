"""A far out-of-distribution image set for MNIST runs: CIFAR-10 test images as grayscale 28x28.

Usage: python benchmarks/ood_cifar_gray.py CIFAR10_JPEG_TAR_GZ OUT_NPZ [--limit N]

Reads ``test/<class>/<name>.jpg`` from the JPEG copy of CIFAR-10 (``../shared/data/
cifar10-jpeg.tar.gz``: a third party's re-encoding, see shared/data/README.md), in sorted path
order, converts each 32x32 RGB image to luma with Pillow's ``convert("L")`` (ITU-R 601-2:
L = 0.299 R + 0.587 G + 0.114 B) and resizes it to 28x28 with box (area) averaging. Writes ``x``
(N x 28 x 28 uint8; N = 10,000, or ``--limit``) for ``python -m bayesbinn_jax mnist ...
--ood-data-file OUT_NPZ`` (issue 30): natural photographs, not digits, far from MNIST in every
respect (``benchmarks/ood_mnist.py`` makes the near set, the test digits rotated).
"""

from __future__ import annotations

import argparse
import io
import tarfile

import numpy as np
from PIL import Image

SIZE = 28


def gray_28(jpeg: bytes) -> np.ndarray:
  """One JPEG as a (28, 28) uint8 luma image (box-resized)."""
  with Image.open(io.BytesIO(jpeg)) as image:
    return np.asarray(image.convert("L").resize((SIZE, SIZE), Image.Resampling.BOX), np.uint8)


def cifar_test_gray(archive: str, limit: int | None = None) -> np.ndarray:
  """The test images of ``archive`` (sorted by path), grayscale 28x28, at most ``limit`` of them."""
  with tarfile.open(archive, "r:gz") as tar:
    members = sorted((m for m in tar.getmembers()
                      if m.isfile() and m.name.lstrip("./").startswith("test/")
                      and m.name.lower().endswith((".jpg", ".jpeg"))), key=lambda m: m.name)
    if not members:
      raise SystemExit(f"{archive}: no test/<class>/*.jpg images")
    if limit is not None:
      # Every class alike: take images round-robin over the sorted classes.
      by_class: dict[str, list[tarfile.TarInfo]] = {}
      for m in members:
        by_class.setdefault(m.name.lstrip("./").split("/")[1], []).append(m)
      queues = [by_class[c] for c in sorted(by_class)]
      members = [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)][:limit]
    return np.stack([gray_28(tar.extractfile(m).read()) for m in members])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("archive")
  parser.add_argument("out")
  parser.add_argument("--limit", type=int, default=None, help="at most this many images")
  args = parser.parse_args()
  x = cifar_test_gray(args.archive, args.limit)
  np.savez(args.out, x=x)
  print(f"wrote {args.out}: x {x.shape} {x.dtype}, mean {x.mean():.1f}")


if __name__ == "__main__":
  main()
