"""benchmarks/device_check.sh: the prepared accelerator check, run here at toy sizes (--smoke).

The smoke run goes through every stage of the GPU check on CPU (device, step times of the MNIST
MLP and the VGG, a tiny CIFAR-like JPEG archive decoded and trained on for one epoch, packed
inference), with ``tensorflow_datasets`` made unimportable, as on the device machine.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess

import pytest

_ROOT = pathlib.Path(__file__).resolve().parents[1]
_SCRIPT = _ROOT / "benchmarks" / "device_check.sh"


def _env(tmp_path: pathlib.Path, **extra: str) -> dict[str, str]:
  blocker = tmp_path / "no-tfds" / "tensorflow_datasets"
  blocker.mkdir(parents=True)
  (blocker / "__init__.py").write_text(
      "raise ImportError('tensorflow_datasets is not installed on the device machine')\n")
  env = dict(os.environ, OUT=str(tmp_path / "out"), **extra)
  env["PYTHONPATH"] = os.pathsep.join(
      p for p in (str(blocker.parent), env.get("PYTHONPATH")) if p)
  return env


@pytest.mark.slow
def test_smoke_runs_every_stage_and_writes_the_summary(tmp_path):
  result = subprocess.run(["bash", str(_SCRIPT), "--smoke"], env=_env(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  out = tmp_path / "out"
  summary = json.loads((out / "device_check.json").read_text())
  assert summary["backend"] == "cpu" and summary["smoke"] is True
  assert [s["stage"] for s in summary["stages"]] == [
      "device", "step_time_mnist", "step_time_vgg", "cifar10_decode", "cifar10_train",
      "packed_inference"]
  assert all(s["rc"] == 0 and not s["timed_out"] for s in summary["stages"])

  steps = summary["step_time_ms"]
  assert steps["mnist"]["batch"] == 8 and steps["vgg"]["batch"] == 2
  assert steps["mnist"]["bayesbinn_k1"] > 0 and steps["vgg"]["bayesbinn_k1"] > 0
  for model in ("mnist", "vgg"):
    machine = json.loads((out / f"step_time_{model}.json").read_text())["machine"]
    assert machine["device_kind"] == "cpu"

  run = summary["cifar10_jpeg_bayesbinn"]
  assert run["plan"]["planned_epochs"] == 1 == run["epochs_done"]
  assert run["plan"]["source"].endswith("tiny-cifar.tar.gz")
  assert len(run["seconds_per_epoch"]) == 1 and run["seconds_per_epoch"][0] > 0
  assert 0.0 <= run["summary"]["test_accuracy"] <= 1.0
  config = json.loads((out / "cifar10-jpeg" / "config.json").read_text())
  assert config["config"]["epochs"] == 1 and config["config"]["batch_size"] == 10
  assert config["optimizer"] == "bayesbinn" and config["data"]["num_train"] == 54
  assert config["data"]["input_shape"] == [32, 32, 3]
  # --data-dir on the archive: the classes recorded, the arrays read from the decode stage's cache.
  assert config["data"]["classes"] == [f"class{i}" for i in range(10)]
  origin = config["data"]["image_folder"]
  assert origin["format"] == "tar" and origin["from_cache"] is True
  assert origin["source"].endswith("tiny-cifar.tar.gz")

  packed = summary["packed_inference"]  # benchmarks/packed_inference.py's JSON
  assert packed == json.loads((out / "packed_inference.json").read_text())
  assert all(v > 0 for batch in packed["latency_ms"].values() for v in batch.values())
  assert (out / "logs" / "cifar10_train.log").is_file()
  assert not list(out.rglob("*.npz")) and not (out / "cifar10-jpeg" / "checkpoints").exists()


@pytest.mark.slow
def test_bad_argument_and_no_accelerator_exit_2(tmp_path):
  bad = subprocess.run(["bash", str(_SCRIPT), "--fast"], env=_env(tmp_path), capture_output=True,
                       text=True, timeout=60)
  assert bad.returncode == 2 and "unknown argument --fast" in bad.stderr
  env = _env(tmp_path / "gpu", JAX_PLATFORMS="cpu")
  result = subprocess.run(["bash", str(_SCRIPT)], env=env, capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 2
  assert "no accelerator" in (tmp_path / "gpu" / "out" / "logs" / "device.log").read_text()
  assert not list((tmp_path / "gpu" / "out").glob("step_time*.json"))
