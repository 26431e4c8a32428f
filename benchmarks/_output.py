"""The one way the benchmark scripts write their JSON results."""

from __future__ import annotations

import os
import sys
from typing import Any

# Run from a checkout without installing: the package is next to benchmarks/.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bayesbinn_jax.atomic import write_json_atomic  # noqa: E402 pylint: disable=wrong-import-position


def write_json(path: str, payload: dict[str, Any]) -> None:
  """Writes ``payload`` to ``path`` (creating its folder) atomically, and says so."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  write_json_atomic(path, payload)
  print(f"wrote {path}")
