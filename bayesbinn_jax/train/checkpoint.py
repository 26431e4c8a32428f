"""Orbax checkpoints of a training run, with metadata checked on restore.

Each checkpoint holds the train state's arrays (step, params, optimizer state,
batch statistics, dropout key) and JSON metadata: the library version, the
experiment, the optimizer, the full config and the progress (epoch, task).
Orbax writes a checkpoint into a temporary directory and renames it when
complete, so a crash during a save never leaves a partial checkpoint as the
latest one; :func:`restore_latest` skips anything not finalised.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import orbax.checkpoint as ocp

import bayesbinn_jax
from bayesbinn_jax.train.engine import TrainState

PyTree = Any
IGNORED_KEYS = ("max_nonfinite_steps", "eval_batch_size", "checkpoint_every")
"""Config keys that may differ between a run and its resumption: they change how a
run is watched, evaluated or saved, never the trained state."""


class CheckpointError(ValueError):
  """A checkpoint that cannot be restored into the run asking for it."""


def _arrays(state: TrainState) -> dict[str, PyTree]:
  return {
      "step": state.step,
      "params": state.params,
      "opt_state": state.opt_state,
      "batch_stats": state.batch_stats,
      "dropout_key": state.dropout_key,
  }


class Checkpointer:
  """Saves and restores a run's checkpoints under ``directory``."""

  def __init__(self, directory: str, *, max_to_keep: int = 2):
    self.directory = os.path.abspath(directory)
    self._manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=False),
    )

  def save(self, index: int, state: TrainState, metadata: Mapping[str, Any]) -> None:
    """Saves ``state`` as checkpoint number ``index`` (e.g. the global epoch)."""
    meta = {"version": bayesbinn_jax.__version__, **metadata}
    self._manager.save(
        index,
        args=ocp.args.Composite(state=ocp.args.StandardSave(_arrays(state)), meta=ocp.args.JsonSave(meta)),
        force=True,
    )
    self._manager.wait_until_finished()

  def latest(self) -> int | None:
    """The number of the latest complete checkpoint, or None."""
    return self._manager.latest_step()

  def restore_latest(self, template: TrainState, expected: Mapping[str, Any]) -> tuple[TrainState, dict] | None:
    """Restores the latest checkpoint into ``template``'s structure.

    ``expected`` is the metadata the run would save (experiment, optimizer,
    config); any difference, other than progress, raises :class:`CheckpointError`
    naming the key, and so does a state whose arrays do not fit the network
    and optimizer of ``template``. Returns None when there is no checkpoint.
    """
    index = self.latest()
    if index is None:
      return None
    where = os.path.join(self.directory, str(index))
    try:
      meta = self._manager.restore(index, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
    except Exception as error:  # noqa: BLE001 - any read failure is a corrupt checkpoint
      raise CheckpointError(f"checkpoint {where} has unreadable metadata: {error}") from error
    _check_metadata(meta, expected, where)
    try:
      arrays = self._manager.restore(
          index, args=ocp.args.Composite(state=ocp.args.StandardRestore(_arrays(template)))).state
    except Exception as error:  # noqa: BLE001
      raise CheckpointError(
          f"checkpoint {where} does not fit this network and optimizer: {str(error).splitlines()[0]}"
      ) from error
    return template.replace(**arrays), meta

  def close(self) -> None:
    self._manager.close()


def _check_metadata(saved: Mapping[str, Any], expected: Mapping[str, Any], where: str) -> None:
  for key in ("experiment", "optimizer"):
    if saved.get(key) != expected.get(key):
      raise CheckpointError(
          f"checkpoint {where} was written by {key}={saved.get(key)!r}, but this run has "
          f"{key}={expected.get(key)!r}; use another --out or the same {key}."
      )
  saved_config, config = saved.get("config", {}), expected.get("config", {})
  for key in sorted(set(saved_config) | set(config)):
    if key in IGNORED_KEYS:
      continue
    if saved_config.get(key) != config.get(key):
      raise CheckpointError(
          f"checkpoint {where} was written with {key}={saved_config.get(key)!r}, but this run "
          f"has {key}={config.get(key)!r}; resume with the same settings or use another --out."
      )
