"""bayesbinn-train across processes and with the state split over devices, end to end."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

from cli_helpers import REPO, cli_command, read_summary

ARGS = ["two-moons", "--epochs", "10", "--quiet", "--set", "test_samples=10", "--set", "eval_every=5"]
COMPARED = ("train_loss", "train_accuracy", "test_accuracy", "test_nll", "mc_test_accuracy", "mc_test_nll")


def _env(devices: int = 1) -> dict:
  return dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}")


def _free_port() -> int:
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    return probe.getsockname()[1]


# main(argv) for each argv of the JSON list in sys.argv[1], in turn, in one process; the first
# non-zero exit status ends it.
RUNS_IN_ONE_PROCESS = """
import json, sys
from bayesbinn_jax.experiments.cli import main
for argv in json.loads(sys.argv[1]):
  code = main(argv)
  if code:
    sys.exit(code)
"""


def _runs_in_one_process(devices: int, *runs: tuple[str, ...]) -> list[dict]:
  """The summaries of ``bayesbinn-train ARGS --out OUT EXTRA...`` for each ``(OUT, *EXTRA)`` of
  ``runs``, run one after the other in one process (one start-up) with ``devices`` devices."""
  argvs = [[*ARGS, "--out", out, *extra] for out, *extra in runs]
  result = subprocess.run([sys.executable, "-c", RUNS_IN_ONE_PROCESS, json.dumps(argvs)], cwd=REPO,
                          env=_env(devices), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr
  return [read_summary(out) for out, *_ in runs]


@pytest.mark.slow
def test_two_processes_end_with_the_single_process_summary(tmp_path):
  (single,) = _runs_in_one_process(2, (str(tmp_path / "single"),))
  out = str(tmp_path / "two")
  address = f"127.0.0.1:{_free_port()}"
  processes = [subprocess.Popen(
      cli_command(*ARGS, "--out", out, "--coordinator", address, "--num-processes", "2",
                  "--process-id", str(rank)), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for rank in range(2)]
  outputs = [process.communicate(timeout=300) for process in processes]
  assert [process.returncode for process in processes] == [0, 0], outputs
  assert "results:" in outputs[0][0] and "results:" not in outputs[1][0]  # only process 0 reports
  assert os.path.exists(os.path.join(out, "two_moons.png"))  # drawn by both, kept by process 0
  summary = read_summary(out)
  assert summary["processes"] == 2 and summary["devices"] == 2 and single["processes"] == 1
  for key in COMPARED:
    assert summary[key] == pytest.approx(single[key], abs=1e-3), key


@pytest.mark.slow
def test_sharded_state_on_8_devices_matches_the_replicated_run_at_an_eighth_of_the_bytes(tmp_path):
  # No figures: their predictions run through the same predict_batches as the evaluations; the
  # two-process test draws them (collectively, process 0 keeping the files).
  replicated, sharded = _runs_in_one_process(8, (str(tmp_path / "replicated"), "--no-figures"),
                                              (str(tmp_path / "sharded"), "--shard-state", "--no-figures"))
  assert sharded["shard_state"] is True and replicated["shard_state"] is False
  for key in COMPARED:
    assert sharded[key] == pytest.approx(replicated[key], abs=1e-3), key
  ratio = sharded["state_bytes_per_device"] / replicated["state_bytes_per_device"]
  assert 0.12 <= ratio <= 0.2, ratio  # 1/8, plus the leaves no axis of which splits in 8


def test_bad_process_arguments_end_in_one_line(tmp_path):
  for extra, words in (
      (["--num-processes", "2", "--process-id", "2", "--coordinator", "127.0.0.1:9"], "--process-id"),
      (["--num-processes", "2"], "--coordinator"),
      (["--num-processes", "0", "--process-id", "0", "--coordinator", "127.0.0.1:9"], "--num-processes")):
    result = subprocess.run(cli_command(*ARGS, "--out", str(tmp_path / "x"), *extra), cwd=REPO, env=_env(),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr
    assert not os.path.exists(tmp_path / "x")


@pytest.mark.slow
def test_an_unreachable_coordinator_ends_in_one_line(tmp_path):
  result = subprocess.run(
      cli_command(*ARGS, "--out", str(tmp_path / "x"), "--coordinator", f"127.0.0.1:{_free_port()}",
                  "--num-processes", "2", "--process-id", "1", "--coordinator-timeout", "2"),
      cwd=REPO, env=_env(), capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  (line,) = result.stderr.strip().splitlines()
  assert "no coordinator answered" in line
  assert not os.path.exists(tmp_path / "x")


def test_a_batch_not_divisible_by_the_devices_is_refused(tmp_path):
  result = subprocess.run(cli_command(*ARGS, "--out", str(tmp_path / "x"), "--set", "batch_size=198"),
                          cwd=REPO, env=_env(8), capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  (line,) = result.stderr.strip().splitlines()
  assert "batch_size=198 must be a multiple of the 8 devices" in line
  assert not os.path.exists(tmp_path / "x")
