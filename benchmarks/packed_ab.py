"""Before/after of packed inference: one checkout's alternating float32/packed medians.

For the checkout at ROOT (this repository, or an older commit's ``git worktree``), on random
+-1 networks with uint8 inputs (as ``packed_inference.py`` builds them): the fully binary
MNIST MLP at batch 1 and 100 and the fully binary VGG at batch 1, ``--calls`` float32 and
packed calls alternated one by one (``float``, ``packed``: medians in ms; ``ratio``), then
the packed network back to back (``btb`` median, ``btb_best``). Prints one JSON line.

Compare two commits by alternating the checkouts, each run in its own process, on an idle
machine (the kernel library is cached per source, so both builds coexist)::

  git worktree add /tmp/old <commit>
  for i in 1 2; do for r in /tmp/old .; do python benchmarks/packed_ab.py --root $r; done; done
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      help="the checkout to time (default: this one)")
  parser.add_argument("--calls", type=int, default=40, help="calls per median (default 40)")
  args = parser.parse_args(argv)
  root = os.path.abspath(args.root)
  sys.path[:0] = [root, os.path.join(root, "benchmarks")]
  import jax  # pylint: disable=import-outside-toplevel

  import bayesbinn_jax  # pylint: disable=import-outside-toplevel
  import packed_inference as pi  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.nn import MnistMLP, VGGBinaryConnect, pack_network  # pylint: disable=import-outside-toplevel

  if not os.path.abspath(bayesbinn_jax.__file__).startswith(root):
    raise SystemExit(f"bayesbinn_jax imported from {bayesbinn_jax.__file__}, not from {root}")

  def timed(fn, x):
    start = time.perf_counter()
    jax.block_until_ready(fn(x))
    return 1e3 * (time.perf_counter() - start)

  rng = np.random.default_rng(0)
  out = {}
  for name, model, shape, batches in [("mlp", MnistMLP(activations="binary"), (784,), (1, 100)),
                                      ("vgg", VGGBinaryConnect(activations="binary"), (32, 32, 3), (1,))]:
    variables = pi._random_binary_network(model, np.zeros((1,) + shape, np.float32), rng)
    apply = jax.jit(lambda v, x, model=model: model.apply(v, x, train=False))
    packed = pack_network(model, variables, input_shape=(1,) + shape, input_dtype=np.uint8)
    for batch in batches:
      x = jax.device_put(pi._images(rng, (batch,) + shape))
      float32 = lambda x, apply=apply, variables=variables: apply(variables, x)
      if not np.array_equal(np.argmax(float32(x), -1), np.argmax(packed(x), -1)):
        raise SystemExit(f"{name} batch {batch}: packed predictions differ from float32")
      for _ in range(5):
        timed(float32, x), timed(packed, x)
      pairs = [(timed(float32, x), timed(packed, x)) for _ in range(args.calls)]
      alone = [timed(packed, x) for _ in range(args.calls)]
      f, p = (float(np.median(v)) for v in zip(*pairs))
      out[f"{name}_b{batch}"] = {"float": round(f, 3), "packed": round(p, 3),
                                 "ratio": round(f / p, 2), "btb": round(float(np.median(alone)), 3),
                                 "btb_best": round(min(alone), 3)}
  print(json.dumps(out))


if __name__ == "__main__":
  main()
