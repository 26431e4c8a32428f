"""benchmarks/packed_after_float.py (issue 25's cold-call measurements) runs end to end."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_packed_after_float_writes_every_section(tmp_path):
  out = tmp_path / "after.json"
  subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "packed_after_float.py"),
                  "--calls", "3", "--settings", "default,threads_1", "--out", str(out)],
                 check=True, capture_output=True, text=True, cwd=ROOT,
                 env=dict(os.environ, JAX_PLATFORMS="cpu"))
  result = json.loads(out.read_text())
  assert set(result["warm"]) == set(result["curve"]) == set(result["gap"]) == {"1", "100"}
  for batch in ("1", "100"):
    warm = result["warm"][batch]
    # One product per binary layer of 784-2048x3-10, each timed alone.
    assert [p["path"] for p in warm["products"]] == [f"BinaryDense_{i}" for i in range(4)]
    assert all(p["ms"] > 0 for p in warm["products"]) and warm["packed_ms"] > 0
    assert len(result["curve"][batch]) == 12
    assert set(result["gap"][batch]) == {"0_ms", "1_ms", "5_ms", "20_ms"}
  # Each setting ran in a child that saw its own environment, and no other setting's.
  alternate = result["alternate"]
  assert list(alternate) == ["default", "threads_1"]
  assert alternate["default"]["environment_seen"] == {}
  assert alternate["threads_1"]["environment_seen"] == {"BAYESBINN_JAX_XNOR_THREADS": "1"}
  for row in alternate.values():
    for batch in ("1", "100"):
      assert row[batch]["speedup"] == row[batch]["float32_ms"] / row[batch]["packed_ms"]


def test_an_unknown_setting_is_refused():
  child = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "packed_after_float.py"),
                          "--settings", "default,fast"], capture_output=True, text=True, cwd=ROOT)
  assert child.returncode == 2 and "--settings: unknown fast" in child.stderr
