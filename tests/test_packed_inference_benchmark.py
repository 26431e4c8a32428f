"""benchmarks/packed_inference.py runs end to end and writes its fully_binary section."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_packed_inference_writes_the_fully_binary_section(tmp_path):
  out = tmp_path / "packed_inference.json"
  subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "packed_inference.py"),
                  "--calls", "1", "--skip-vgg", "--skip-ensemble", "--out", str(out)],
                 check=True, capture_output=True, text=True, cwd=ROOT,
                 env=dict(os.environ, JAX_PLATFORMS="cpu"))
  result = json.loads(out.read_text())
  assert result["predictions_identical"] is True
  section = result["fully_binary"]
  assert section["predictions_identical"] is True
  rows = section["latency_ms"]
  assert set(rows) == {"1", "8", "100"}
  for row in rows.values():
    assert row["float32"] > 0 and row["packed"] > 0
    assert row["speedup"] == row["float32"] / row["packed"]
    assert set(row["back_to_back"]) >= {"float32", "packed"}
  # One product per binary layer of 784-2048x3-10: the first on the uint8 pixels (native
  # kernel: 784 uint8 inputs by table lookup; XLA: 8 bit-planes of 784 bits = 25 words, padded
  # to 26), the hidden ones popcounts of 2048 bits = 64 words.
  layers = section["layers"]["100"]
  native = section["machine"]["kernel"] == "native"
  first = layers[0]
  assert (first["op"], first["planes"], first["rows"], first["units"]) == (
      "dot_u8" if native else "xnor_count", 8, 100, 2048)
  assert first["words"] == (25 if native else 26)
  assert [(l["op"], l["planes"], l["rows"], l["words"], l["units"]) for l in layers[1:]] == [
      ("xnor_count", 1, 100, 64, 2048), ("xnor_count", 1, 100, 64, 2048),
      ("xnor_count", 1, 100, 64, 10)]
  assert layers[1]["uint64_word_ops"] == 100 * 2048 * 32
  assert first["uint64_word_ops"] == 8 * 100 * 2048 * 13      # as 8 bit-planes of 13 uint64
  for layer in layers:
    assert layer["floor_popcount_ms"] > 0 and layer["floor_memory_ms"] > 0
    assert layer["floor_popcount_all_cores_ms"] > 0
  if native:
    assert first["uint8_products"] == 100 * 784 * 2048
    assert first["floor_lookup_ms"] > 0 and first["alternative_bit_planes_ms"] > 0
    alternatives = section["alternatives_ms"]
    assert set(alternatives["1"]) == {"default", "u8_avx2", "avx512_permute", "avx512_vpop256",
                                      "avx2", "avx2_lookup",
                                      "avx2_hs", "avx2_rows1", "avx2_reduce1", "avx2_unblocked",
                                      "scalar64", "scalar32", "threads_1"}
  assert "vgg" not in section and "ensemble" not in section
