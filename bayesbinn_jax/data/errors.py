"""The error raised for unreadable or invalid data sets."""

from __future__ import annotations

import os


class DataError(ValueError):
  """A data file or array set that cannot be used, with a one-line reason.

  The message always starts with the source (a file name, a directory, or a
  ``tfds:<name>`` label), followed by a colon and the problem, e.g.
  ``"mnist.npz: y_train has 5 labels but x_train has 6 images"``.
  """

  def __init__(self, source: str | os.PathLike, problem: str):
    self.source = str(source)
    self.problem = " ".join(str(problem).split())
    super().__init__(f"{self.source}: {self.problem}")
