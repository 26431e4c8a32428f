"""Stopping a run cleanly on SIGINT (Ctrl-C) and SIGTERM (what SLURM and Kubernetes send
before they kill a job).

:class:`StopRequest` turns the first of these signals into a request that the training
loop reads at its next step boundary (``train_epoch(stop=...)``); the run then saves a
checkpoint there and raises :class:`Interrupted`, which names it. A second signal stops at
once: it raises :class:`KeyboardInterrupt` wherever the program is (the last complete
checkpoint stays the one to resume from).
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(Exception):
  """A run stopped by a signal at a step boundary.

  ``signum`` the signal; ``checkpoint`` the folder of the checkpoint to resume from (None
  when nothing was trained yet); ``epoch`` the epochs complete and ``step`` the steps of the
  next epoch done at the stop; ``steps_per_epoch``.
  """

  def __init__(self, signum: int, checkpoint: str | None, epoch: int, step: int, steps_per_epoch: int):
    self.signum = signum
    self.checkpoint = checkpoint
    self.epoch = epoch
    self.step = step
    self.steps_per_epoch = steps_per_epoch
    where = f"after epoch {epoch}" + (f", step {step} of {steps_per_epoch} of epoch {epoch + 1}" if step else "")
    saved = f"checkpoint {checkpoint}" if checkpoint else "no checkpoint (nothing trained yet)"
    super().__init__(f"stopped by {self.signal_name} {where}: {saved}")

  @property
  def signal_name(self) -> str:
    return signal.Signals(self.signum).name

  @property
  def exit_status(self) -> int:
    """128 + the signal's number, as a shell reports a process the signal ended: 130 for
    SIGINT, 143 for SIGTERM."""
    return 128 + self.signum


class StopRequest:
  """Within ``with StopRequest() as stop:``, SIGINT and SIGTERM set :attr:`signum` (the first
  one) instead of ending the process; ``stop()`` (or :attr:`requested`) tells whether one came.
  A second signal raises :class:`KeyboardInterrupt` in the main thread. The previous handlers
  are restored on leaving. Outside the main thread (where Python cannot install handlers),
  or with ``enabled=False``, nothing is installed and no stop is ever requested."""

  def __init__(self, enabled: bool = True):
    self.enabled = enabled
    self.signum: int | None = None
    self._previous: dict[int, Any] = {}

  def __enter__(self) -> StopRequest:
    if self.enabled and threading.current_thread() is threading.main_thread():
      for signum in SIGNALS:
        self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info: Any) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous = {}

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    if self.signum is not None:
      self.__exit__()
      raise KeyboardInterrupt(f"a second {signal.Signals(signum).name}")
    self.signum = signum

  @property
  def requested(self) -> bool:
    return self.signum is not None

  def __call__(self) -> bool:
    return self.requested
