"""A convolution's thresholded bits: patches gathered in the kernel against XLA's patch matrix.

For the 3x3 SAME binary convolutions of the VGG at batch 1 (feature map H x H, C uint32
words per pixel, N units; random words, limits at the mean count): ``xnor_conv_bits`` on the
packed map (the kernel gathers each block of rows' patches) against ``xnor_bits`` on
``conv_patches`` built by XLA, both jitted; the two alternate, 3 rounds of 300 calls each
(median and best ms per round). Bit for bit equal (checked).

Run on an idle machine from the repository root:
``python benchmarks/results/packed_conv_bits/run.py > benchmarks/results/packed_conv_bits/result.json``.
"""

import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.join(HERE, "..", ".."), os.path.join(HERE, "..", "..", "..")]
import jax  # noqa: E402

from packed_inference import _median_ms  # noqa: E402
from bayesbinn_jax.nn import xnor_kernel  # noqa: E402


def timed(fn, *args, calls=300):
  for _ in range(20):
    jax.block_until_ready(fn(*args))
  return [round(v, 3) for v in _median_ms(fn, args, calls)]


def main():
  rng = np.random.default_rng(0)
  rows = []
  for h, c, n in [(32, 4, 128), (16, 4, 256), (16, 8, 256), (8, 8, 512), (8, 16, 512)]:
    x = jax.device_put(rng.integers(0, 2 ** 32, (1, h, h, c), dtype=np.uint32))
    w = rng.integers(0, 2 ** 32, (n, 9 * c), dtype=np.uint32)
    w = jax.device_put(xnor_kernel.weight_layout(np.pad(w, ((0, 0), (0, (9 * c) % 2))), "native"))
    limit = jax.device_put(np.full((h * h, n), 9 * c * 16, np.int32))
    window = ((3, 3), (1, 1), ((1, 1), (1, 1)), (h, h))
    patches = jax.jit(lambda x, w, l, h=h, n=n, window=window: xnor_kernel.xnor_bits(
        xnor_kernel.conv_patches(x, *window).reshape(h * h, -1), w, l, "native", n))
    gathered = jax.jit(lambda x, w, l, n=n, window=window: xnor_kernel.xnor_conv_bits(
        x, w, l, "native", n, *window))
    assert np.array_equal(np.asarray(patches(x, w, limit)), np.asarray(gathered(x, w, limit)))
    result = {"xla_patches_then_xnor_bits": [], "xnor_conv_bits": []}
    for _ in range(3):
      result["xla_patches_then_xnor_bits"].append(timed(patches, x, w, limit))
      result["xnor_conv_bits"].append(timed(gathered, x, w, limit))
    rows.append({"map": f"{h}x{h}", "channel_words": c, "units": n, "median_best_ms": result})
  print(json.dumps({"command": "python benchmarks/results/packed_conv_bits/run.py",
                    "load_average_1min": os.getloadavg()[0], "layers": rows}, indent=1))


if __name__ == "__main__":
  main()
