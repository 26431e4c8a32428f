"""The benchmark scripts run end to end and write the JSON the README's tables come from."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(script, *args):
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", script), *args], check=True,
                 capture_output=True, text=True, env=env, cwd=ROOT)


@pytest.mark.slow
def test_step_time_writes_ratios_to_the_plain_optax_adam_step(tmp_path):
  out = tmp_path / "step_time.json"
  _run("step_time.py", "--quick", "--optimizers", "bayesbinn_k1,optax_adam", "--mnist-batch", "4",
       "--rounds", "2", "--out", str(out))
  result = json.loads(out.read_text())
  assert result["settings"]["malloc"] == "retain"
  rows = result["results"]["mnist"]["optimizers"]
  assert rows["optax_adam"]["compiler_options"] == "XLA defaults"
  # Hand counts, not values the script derived from its own output: 784*2048 + 2*2048^2 + 2048*10
  # weights; BayesBiNN at beta = 0 keeps lambda (+ count, keys), Adam two moments.
  assert result["results"]["mnist"]["num_weights"] == 10_014_720
  bayesbinn = rows["bayesbinn_k1"]
  assert bayesbinn["steps"] == 2 and 0 < bayesbinn["median_ms"] < 60_000
  assert abs(bayesbinn["opt_state_floats_per_weight"] - 1.0) < 1e-3
  assert abs(rows["optax_adam"]["opt_state_floats_per_weight"] - 2.0) < 1e-3
  assert bayesbinn["params_floats_per_weight"] == 1.0
  assert bayesbinn["minor_faults_per_step"] >= 0 and bayesbinn["memory"]["temp_mib"] > 0


@pytest.mark.slow
def test_sample_noise_times_every_generator(tmp_path):
  out = tmp_path / "sample_noise.json"
  _run("sample_noise.py", "--weights", "1000", "--rounds", "1", "--calls", "1", "--out", str(out))
  result = json.loads(out.read_text())
  assert set(result["median_ms"]) == {"memory floor", "counter", "threefry", "rbg", "unsafe_rbg"}
  assert all(set(row) == {"xla_default", "engine"} for row in result["median_ms"].values())
