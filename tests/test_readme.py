"""The README's Flax TrainState example runs as printed and trains two moons."""

from __future__ import annotations

import os
import re

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def test_trainstate_example_reaches_95_percent_training_accuracy():
  text = open(README).read()
  section = text[text.index("## BayesBiNN in a Flax TrainState loop"):]
  code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
  namespace: dict = {}
  exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - our own README
  assert float(namespace["accuracy"]) >= 0.95
  probs = namespace["probs"]
  assert probs.shape == (len(namespace["moons"].x_test), 2)
  assert abs(float(probs.sum(-1).mean()) - 1.0) < 1e-5
