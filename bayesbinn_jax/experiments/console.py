"""What a run prints: its config, its data, one progress bar, evaluations, and the results.

On a terminal the run shows one tqdm bar for the whole run (updated per step,
with the epoch's running loss and accuracy) and an evaluation line every
``eval_every`` epochs above it. Written to a file or a pipe there is no bar
and no carriage return: the config in a few lines, the data, the evaluation
lines and a short table of the results. ``quiet`` drops the bar on a
terminal too.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import textwrap
from typing import Any, Iterator, Mapping, TextIO

from tqdm.auto import tqdm

WIDTH = 100
"""Line width of the wrapped config."""

EVALUATION_KEYS = ("train_loss", "train_accuracy", "val_accuracy", "test_accuracy", "test_nll",
                   "mc_test_accuracy", "mc_test_nll", "train_rmse", "mc_train_rmse", "mc_train_nll")
"""Metrics shown in an evaluation line, when the record has them."""

RESULT_KEYS = ("test_accuracy", "test_nll", "test_ece", "mc_test_accuracy", "mc_test_nll", "mc_test_ece",
               "best_val_accuracy", "best_val_epoch", "test_accuracy_at_best_val",
               "mc_test_accuracy_at_best_val", "temperature", "test_nll_calibrated",
               "test_ece_calibrated", "mc_temperature", "mc_test_nll_calibrated", "mc_test_ece_calibrated",
               "ood_auroc", "mc_ood_auroc", "train_rmse", "mc_train_rmse",
               "mc_train_nll", "avg_test_accuracy_after_task", "train_seconds")
"""Summary entries shown in the results table, when the summary has them."""


def _format(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
  if isinstance(value, list):
    return "[" + ", ".join(_format(v) for v in value) + "]"
  return str(value)


class Console:
  """The run's output stream (stdout by default)."""

  def __init__(self, *, quiet: bool = False, stream: TextIO | None = None):
    self.stream = stream or sys.stdout
    self.show_bar = not quiet and self.stream.isatty()
    self._bar: tqdm | None = None

  @classmethod
  def silent(cls) -> "Console":
    """A console that shows nothing: the one of every process but process 0 in a
    multi-process run (only process 0 reports)."""
    return cls(quiet=True, stream=io.StringIO())

  def line(self, text: str) -> None:
    """One line, printed above the progress bar when one is shown."""
    if self._bar is not None:
      self._bar.write(text, file=self.stream)
    else:
      print(text, file=self.stream, flush=True)

  def config(self, header: str, config: Mapping[str, Any]) -> None:
    """``header`` then the settings as ``key=value`` wrapped to :data:`WIDTH` columns."""
    self.line(header)
    items = " ".join(f"{key}={json.dumps(value, separators=(',', ':'))}" for key, value in config.items())
    for row in textwrap.wrap(items, WIDTH - 2, break_on_hyphens=False):
      self.line("  " + row)

  def data(self, described: Mapping[str, Any], steps_per_epoch: int, left_out: int = 0) -> None:
    """The data's shapes, sizes and number of classes, the steps per epoch and, when the last
    partial batch is dropped, how many training examples each epoch leaves out."""
    parts = [f"{described['num_train']} train"]
    if described.get("num_val"):
      parts.append(f"{described['num_val']} validation")
    parts.append(f"{described['num_test']} test")
    shape = "x".join(str(d) for d in described["input_shape"]) or "scalar"
    kind = (f"{described['num_classes']} classes" if "num_classes" in described else "regression")
    dtype = f" {described['dtype']}" if "dtype" in described else ""
    steps = f"{steps_per_epoch} step{'s' if steps_per_epoch != 1 else ''} per epoch"
    if left_out:
      steps += (f" ({left_out} of the {described['num_train']} training examples left out of each epoch: "
                "the last partial batch is dropped)")
    self.line(f"data: {', '.join(parts)}; inputs {shape}{dtype}; {kind}; {steps}")

  @contextlib.contextmanager
  def progress(self, total_steps: int, done_steps: int = 0) -> Iterator[tqdm | None]:
    """The run's one progress bar (None when none is shown)."""
    if not self.show_bar:
      yield None
      return
    self._bar = tqdm(total=total_steps, initial=done_steps, file=self.stream, unit="step",
                     dynamic_ncols=True, leave=False)
    try:
      yield self._bar
    finally:
      self._bar.close()
      self._bar = None

  def evaluation(self, record: Mapping[str, Any], total_epochs: int) -> None:
    """One line of an evaluated epoch's metrics."""
    parts = [f"{key}={record[key]:.4f}" for key in EVALUATION_KEYS if key in record]
    task = f" task {record['task']}" if "task" in record else ""
    self.line(f"epoch {record['epoch']}/{total_epochs}{task} ({_duration(record['seconds'])}): "
              + " ".join(parts))

  def results(self, summary: Mapping[str, Any], out_dir: str) -> None:
    """A short table of the results and where the outputs went."""
    rows = [(key, _format(summary[key])) for key in RESULT_KEYS if key in summary]
    width = max((len(key) for key, _ in rows), default=0)
    self.line("results:")
    for key, value in rows:
      self.line(f"  {key:<{width}}  {value}")
    files = sorted(name for name in os.listdir(out_dir) if not name.startswith(".") and name != "run.lock")
    self.line(f"outputs in {out_dir}: {', '.join(files)}")


def _duration(seconds: float) -> str:
  """``12.3s``, or ``14ms`` under a tenth of a second (a two moons epoch is one step)."""
  return f"{seconds:.1f}s" if seconds >= 0.1 else f"{seconds * 1e3:.0f}ms"
