"""Joining a multi-process job (``train/distributed.py``) and training in one.

The bad-input checks run in this process (they fail before JAX is touched) or,
where JAX would start, in a subprocess. The end-to-end check starts two
processes on 127.0.0.1 (CPU backend, gloo collectives), each with one device
and its own half of every batch, and compares their 10 BayesBiNN steps of two
moons with one process's, with the train state replicated and split over the
two processes' devices; the replicated state is also saved through Orbax by
both processes and restored whole by both. Each of the three processes (one
alone, two joined) trains both layouts, one after the other, so that the
processes start and join once for the two layouts.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from bayesbinn_jax.train import distributed

STEPS = 10
BATCH = 20  # 200 two-moons points: one epoch is 10 steps


@pytest.mark.parametrize("args, message", [
    (("127.0.0.1:1234", 2, None), "^process_id missing"),
    ((None, 2, 0), "^coordinator missing"),
    (("127.0.0.1:1234", 0, 0), "^num_processes must be an integer >= 1; got 0"),
    (("127.0.0.1:1234", 2, 2), r"^process_id must be an integer in \[0, 2\) for num_processes 2; got 2"),
    (("127.0.0.1:1234", 2, -1), r"^process_id must be an integer in \[0, 2\)"),
    (("127.0.0.1:1234", 2.0, 0), "^num_processes must be an integer"),
    (("localhost", 2, 0), "^coordinator 'localhost' must be HOST:PORT"),
    (("localhost:0", 2, 0), "port in \\[1, 65535\\]"),
    ((":80", 2, 0), "must be HOST:PORT"),
])
def test_bad_arguments_are_one_line_errors_naming_the_argument(args, message):
  # The library names its arguments; the CLI renders them as flags (test_library_errors.py).
  with pytest.raises(distributed.DistributedError, match=message) as raised:
    distributed.initialize(*args, timeout_s=1)
  assert "\n" not in str(raised.value) and "--" not in str(raised.value)
  assert raised.value.arguments and all(name in str(raised.value) for name in raised.value.arguments[:1])
  assert isinstance(raised.value, ValueError)


def test_addresses():
  assert distributed.parse_address("10.0.0.1:1234") == ("10.0.0.1", 1234)
  assert distributed.parse_address("[::1]:80") == ("::1", 80)
  assert distributed.parse_address("node-3.cluster:65535") == ("node-3.cluster", 65535)


def test_timeout_must_be_positive():
  with pytest.raises(distributed.DistributedError, match="timeout_s must be > 0"):
    distributed.initialize("127.0.0.1:1234", 2, 1, timeout_s=0)


def test_one_process_is_the_main_one():
  assert distributed.process_count() == 1 and distributed.is_main_process()


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


def _env() -> dict:
  flags = " ".join(f for f in os.environ.get("XLA_FLAGS", "").split()
                   if "xla_force_host_platform_device_count" not in f)
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=flags)


def test_unreachable_coordinator_and_busy_port_end_in_one_line_quickly():
  with socket.socket() as busy:
    busy.bind(("", 0))
    busy.listen()
    began = time.monotonic()
    done = subprocess.run([sys.executable, __file__, "errors", str(_free_port()), str(busy.getsockname()[1])],
                          env=_env(), capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(done.stdout.strip().splitlines()[-1])
  assert result["unreachable"].startswith("no coordinator answered at 127.0.0.1:")
  assert "within 2 s" in result["unreachable"] and "\n" not in result["unreachable"]
  assert 1.9 <= result["unreachable_s"] < 10
  assert "is not free on process 0" in result["busy"] and "\n" not in result["busy"]
  assert time.monotonic() - began < 60


LAYOUTS = ("replicated", "sharded")


@pytest.mark.slow
def test_two_processes_train_as_one(tmp_path):
  # One process alone and two joined; each trains every layout of LAYOUTS in turn.
  port = _free_port()
  runs = {"one": [("-", 1, 0)], "two": [(f"127.0.0.1:{port}", 2, 0), (f"127.0.0.1:{port}", 2, 1)]}
  procs = []
  for name, members in runs.items():
    for coordinator, count, rank in members:
      prefix = str(tmp_path / f"{name}-{rank}")
      procs.append((prefix, subprocess.Popen(
          [sys.executable, __file__, "train", coordinator, str(count), str(rank), prefix, ",".join(LAYOUTS)],
          env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
  for _, proc in procs:
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-3000:]
  for layout in LAYOUTS:
    one, two0, two1 = (dict(np.load(f"{prefix}-{layout}.npz")) for prefix, _ in procs)
    if layout == "replicated":  # saved once through Orbax by both processes, restored by both
      assert one["checkpoint_roundtrip"] and two0["checkpoint_roundtrip"] and two1["checkpoint_roundtrip"]
    assert two0.keys() == one.keys() and two1.keys() == one.keys(), layout
    for key in one:
      if key != "batch_error":
        np.testing.assert_array_equal(two1[key], two0[key], err_msg=f"{layout} {key}")  # every process alike
        np.testing.assert_allclose(two0[key], one[key], rtol=1e-3, atol=1e-3, err_msg=f"{layout} {key}")
    assert str(two0["batch_error"]) == ("batch_size=3 must be a multiple of the 2 devices in use (2 processes); "
                                        "pick a multiple of 2."), layout


# ------------------------------------------------------------------ the subprocesses' side


def _errors(free_port: str, busy_port: str) -> dict:
  result = {}
  began = time.monotonic()
  try:
    distributed.initialize(f"127.0.0.1:{free_port}", 2, 1, timeout_s=2)
  except distributed.DistributedError as error:
    result["unreachable"], result["unreachable_s"] = str(error), time.monotonic() - began
  try:
    distributed.initialize(f"127.0.0.1:{busy_port}", 2, 0, timeout_s=2)
  except distributed.DistributedError as error:
    result["busy"] = str(error)
  return result


def _train_layouts(coordinator: str, count: int, rank: int, prefix: str, layouts: list[str]) -> None:
  """Joins the job as process ``rank`` of ``count``, then runs :func:`_train` for each layout in
  turn, into ``<prefix>-<layout>.npz`` (the processes of a job share the prefix's folder)."""
  if count > 1:
    distributed.initialize(coordinator, count, rank, timeout_s=60)
  for layout in layouts:
    _train(count, f"{prefix}-{layout}.npz", layout)


def _train(count: int, out: str, layout: str) -> None:
  """10 BayesBiNN steps of two moons through the engine, in a job of ``count`` processes, with
  the state ``layout``: "replicated", or "sharded" over the devices (one per process)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.data import two_moons  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.experiments.config import build_config, method_of  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.nn import ToyMLP  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.optim import BayesBiNNState, find_state  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train import sharding  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train.engine import (  # pylint: disable=import-outside-toplevel
      create_train_state, make_predict, make_train_step)
  from bayesbinn_jax.train.keys import purpose_key  # pylint: disable=import-outside-toplevel

  assert jax.process_count() == count and len(jax.local_devices()) == 1
  moons = two_moons(100, 0.1, 0)
  x, y = moons.x_train.astype(np.float32), moons.y_train
  method = method_of(build_config("two-moons", "bayesbinn"),
                        steps_per_epoch=STEPS, train_set_size=len(x), key=purpose_key(0, "optimizer"))
  model = ToyMLP(outputs=2, quantizer=method.quantizer)
  mesh = sharding.data_mesh()
  state = create_train_state(model, method, jnp.zeros((1, 2)), 0)
  step = make_train_step(method, "classification")
  if layout == "replicated":
    state = sharding.replicate(mesh, state)
  else:  # every array of the ToyMLP splits over 2 devices: each process holds half of lambda
    state, state_layout, _ = sharding.shard_state(mesh, state, num_samples=method.num_samples)
    step = sharding.pin_layout(step, mesh, state_layout)
  losses = []
  for xb, yb in sharding.process_batches(x, y, BATCH, mesh=mesh, seed=0, epoch=0):
    assert len(xb) == BATCH // count  # this process's rows only
    state, metrics = step(state, *sharding.shard_process_batch(mesh, BATCH, xb, yb))
    losses.append(float(metrics["loss"]))
  assert len(losses) == STEPS
  predict = make_predict(method, "classification")
  probs = sharding.to_host(predict(state, *sharding.shard_batch(mesh, moons.x_test[:40].astype(np.float32))))
  lam = sharding.to_host(find_state(state.opt_state, BayesBiNNState).lam)
  results = {"losses": np.asarray(losses), "probs": probs,
             **{f"lam{i}": leaf for i, leaf in enumerate(jax.tree.leaves(lam))}}
  if layout == "replicated":
    results["checkpoint_roundtrip"] = _checkpoint_roundtrip(
        state, os.path.join(os.path.dirname(out), f"checkpoints-{count}"), mesh, model, method)
  try:
    sharding.process_rows(mesh, 3)
    batch_error = ""
  except sharding.ShardingError as error:
    batch_error = str(error)
  np.savez(out, batch_error=np.asarray(batch_error), **results)


def _checkpoint_roundtrip(state, directory: str, mesh, model, method) -> bool:
  """Whether the state saved through Orbax by every process is restored whole, on every process,
  into another state placed on the mesh."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train import sharding  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train.engine import create_train_state  # pylint: disable=import-outside-toplevel

  metadata = {"experiment": "two-moons", "optimizer": "bayesbinn", "config": {}, "progress": {"epoch": 1}}
  checkpointer = Checkpointer(directory)
  checkpointer.save(1, state, metadata)
  template = sharding.replicate(mesh, create_train_state(model, method, jnp.zeros((1, 2)), 1))
  restored, _ = checkpointer.restore_latest(template, metadata)
  checkpointer.close()
  saved, read = sharding.to_host(jax.tree.leaves(state)), sharding.to_host(jax.tree.leaves(restored))
  return len(saved) == len(read) and all(np.array_equal(a, b) for a, b in zip(saved, read))


if __name__ == "__main__":
  if sys.argv[1] == "errors":
    print(json.dumps(_errors(*sys.argv[2:4])))
  else:
    _train_layouts(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6].split(","))
