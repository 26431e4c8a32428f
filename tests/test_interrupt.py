"""SIGINT and SIGTERM stop a run at a step boundary (issue 26, item 11): the signal handling
(``train/interrupt.py``) and an epoch stopped and continued (``train_epoch(stop=, start_step=,
sums=)``) at the library level; the real subprocess is in test_run_folder_cli.py."""

from __future__ import annotations

import os
import signal
from typing import NamedTuple

import numpy as np
import pytest

from bayesbinn_jax.train.interrupt import Interrupted, StopRequest
from bayesbinn_jax.train.loop import EpochStopped, NonFiniteLossError, train_epoch
from bayesbinn_jax.train.sharding import data_mesh


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_is_a_request_and_the_second_stops_at_once(signum):
  before = signal.getsignal(signum)
  with StopRequest() as stop:
    assert not stop() and stop.signum is None
    os.kill(os.getpid(), signum)
    assert stop() and stop.signum == signum
    with pytest.raises(KeyboardInterrupt, match=f"a second {signal.Signals(signum).name}"):
      os.kill(os.getpid(), signum)
  assert signal.getsignal(signum) is before


def test_handlers_are_restored_and_a_disabled_request_installs_none():
  before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
  with StopRequest(enabled=False) as stop:
    assert {s: signal.getsignal(s) for s in before} == before
  with StopRequest() as stop:
    assert signal.getsignal(signal.SIGTERM) == stop._handle
  assert {s: signal.getsignal(s) for s in before} == before


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupted_names_the_checkpoint_the_position_and_the_exit_status(signum, status):
  stopped = Interrupted(signum, "/o/checkpoints/3", epoch=2, step=7, steps_per_epoch=10)
  assert stopped.exit_status == status
  assert str(stopped) == (f"stopped by {signal.Signals(signum).name} after epoch 2, step 7 of 10 of epoch 3: "
                          "checkpoint /o/checkpoints/3")
  assert str(Interrupted(signum, None, 0, 0, 10)).endswith("after epoch 0: no checkpoint (nothing trained yet)")


# ------------------------------------------------------------------ an epoch stopped and continued
class _State(NamedTuple):
  value: np.float32  # order-dependent: a different batch order or a replayed batch changes it
  streak: int


def _step(state, x, y):
  value = np.float32(state.value * np.float32(0.75) + np.float32(x.mean()) * np.float32(0.1) + np.float32(y.sum()))
  return _State(value, 0), {"loss": np.float32(value / 7), "accuracy": np.float32(x[0, 0] / 3),
                            "nonfinite_streak": 0}


X = np.random.default_rng(0).normal(size=(40, 3)).astype(np.float32)
Y = np.arange(40, dtype=np.int32) % 3


def _epoch(**kwargs):
  return train_epoch(_State(np.float32(1.0), 0), _step, X, Y, batch_size=4, seed=3, epoch=2,
                     inputs=lambda a: a, mesh=data_mesh(), max_nonfinite_steps=1, **kwargs)


@pytest.mark.parametrize("stop_at", [0, 1, 4, 9])
def test_an_epoch_stopped_at_any_step_and_continued_is_bitwise_the_whole_epoch(stop_at):
  whole_state, whole = _epoch()
  asked = []

  def stop():
    asked.append(True)
    return len(asked) > stop_at

  with pytest.raises(EpochStopped) as stopped:
    _epoch(stop=stop)
  assert stopped.value.step == stop_at and len(asked) == stop_at + 1  # asked before every step
  partial = stopped.value
  state, means = train_epoch(partial.state, _step, X, Y, batch_size=4, seed=3, epoch=2, inputs=lambda a: a,
                             mesh=data_mesh(), max_nonfinite_steps=1, start_step=partial.step, sums=partial.sums)
  assert state.value.tobytes() == whole_state.value.tobytes()
  assert means == whole  # the same float32 sums, in the same order
  # Continuing from the start with the state after the stop replays batches: another result.
  if stop_at:
    replayed, _ = train_epoch(partial.state, _step, X, Y, batch_size=4, seed=3, epoch=2, inputs=lambda a: a,
                              mesh=data_mesh())
    assert replayed.value != whole_state.value


def test_a_stop_checks_the_nonfinite_streak_of_the_step_before_it():
  def nan_step(state, x, y):
    return _State(state.value, state.streak + 1), {"loss": np.float32(np.nan), "nonfinite_streak": state.streak + 1}

  calls = []
  with pytest.raises(NonFiniteLossError, match="2 consecutive steps"):
    train_epoch(_State(np.float32(0), 0), nan_step, X, Y, batch_size=4, seed=0, epoch=0, inputs=lambda a: a,
                mesh=data_mesh(), max_nonfinite_steps=1, stop=lambda: calls.append(1) or len(calls) > 2)
