"""One run of an experiment, as a linear pipeline.

    config -> data -> model and method -> train state -> epoch loop -> evaluation -> report

:func:`run_experiment` reads top to bottom; every stage is a function of what
the stages before it produced, and every difference between experiments comes
from the :class:`~bayesbinn_jax.experiments.specs.ExperimentSpec`.

Outputs in ``out_dir``: ``config.json``; ``metrics.jsonl`` (a line per epoch,
appended); TensorBoard event files; ``summary.json``; ``checkpoints/`` (Orbax);
figures as PNG (unless ``RunOptions.figures`` is False). A run interrupted and
restarted with ``resume=True`` continues from the last complete checkpoint and
ends with the summary of an uninterrupted run: batch order, dropout and
BayesBiNN samples are functions of (seed, epoch, step) and of the checkpointed
state only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from bayesbinn_jax import data
from bayesbinn_jax._version import __version__
from bayesbinn_jax.atomic import write_json_atomic
from bayesbinn_jax.experiments import report
from bayesbinn_jax.experiments.config import (SCHEMA_VERSION, SavedRun, check_evaluation, migrate, read_saved_run,
                                              resumable_keys)
from bayesbinn_jax.experiments.console import Console
from bayesbinn_jax.experiments.options import RunError, RunOptions
from bayesbinn_jax.experiments.prepare import Prepared, prepare, set_prior, uses_posterior_prior
from bayesbinn_jax.experiments.specs import ExperimentSpec, get_spec
from bayesbinn_jax.data.fingerprint import dataset_fingerprint
from bayesbinn_jax.train import run_folder
from bayesbinn_jax.train.checkpoint import Checkpointer, check_metadata
from bayesbinn_jax.train.interrupt import Interrupted, StopRequest
from bayesbinn_jax.train.engine import TrainState
from bayesbinn_jax.train.keys import purpose_key
from bayesbinn_jax.train.loop import EpochStopped, train_epoch
from bayesbinn_jax.train.metric_writer import MetricsFileError, MetricWriter, read_records
from bayesbinn_jax.train.distributed import is_main_process, process_count
from bayesbinn_jax.train.stall import stalled_training_note
from bayesbinn_jax.train.sharding import state_bytes_per_device

RESULT_FILES = ("config.json", "metrics.jsonl", "summary.json")


# ----------------------------------------------------------------------------- stages of a run and of --evaluate
def restore(prepared: Prepared, options: RunOptions, checkpointer: Checkpointer,
            purpose: str) -> tuple[TrainState, int, list[str]]:
  """The newest intact checkpoint, checked against the run's settings (those of an earlier
  release migrated, see ``config.migrate``) and placed on the mesh; its epoch; a note per
  damaged checkpoint skipped (``purpose``: what the intact one is used for)."""
  state, meta = checkpointer.restore_latest(  # type: ignore[misc]  # called where a checkpoint exists
      prepared.state, _metadata(options, prepared.spec, 0), ignored=resumable_keys(),
      migrate=lambda saved: migrate(saved, checkpointer.directory))
  notes = [f"skipped the damaged checkpoint {error.folder} (it {error.problem}); {purpose} the newest "
           "intact one" for error in checkpointer.skipped]
  return prepared.training.place(state), int(meta["progress"]["epoch"]), notes


def measure(prepared: Prepared, options: RunOptions, state: TrainState, summary: dict) -> list:
  """A classification run's uncertainty (temperature scaling, Brier score, entropy,
  misclassification and OOD AUROC) added to ``summary``; returns the predictives."""
  if prepared.spec.task != "classification":
    return []
  measured, predictives = report.measure_uncertainty(options, state, prepared.evaluator, prepared.ood_images)
  summary.update(measured)
  return predictives


def draw_figures(prepared: Prepared, options: RunOptions, out_dir: str, summary: dict, state: TrainState,
                 predictives: list, records: list | None = None) -> None:
  """The figures in ``out_dir`` (none when ``options.figures`` is False): after a run
  (``records``) the training curves and the spec's figures, after an evaluation those of
  the final state. Their predictions are collective: every process draws them, process 0
  keeps the files."""
  if not options.figures:
    return
  with contextlib.ExitStack() as stack:
    folder = out_dir if is_main_process() else stack.enter_context(tempfile.TemporaryDirectory())
    inputs = report.FigureInputs(folder, options, summary, state, prepared.evaluator, predictives)
    if records is None:
      report.prediction_figures(prepared.spec, inputs)
    else:
      report.figures(prepared.spec, records, inputs)


def write_summary(out_dir: str, summary: dict, console: Console) -> None:
  """``out_dir/summary.json`` and the results on the console (process 0)."""
  if is_main_process():
    write_json_atomic(os.path.join(out_dir, "summary.json"), summary)
    console.results(summary, out_dir)


# ----------------------------------------------------------------------------- the run
def run_experiment(options: RunOptions, console: Console | None = None) -> dict:
  """Runs (or resumes) one experiment and writes every output; returns the summary.

  Process 0 holds the lock of ``out_dir`` while it runs (:mod:`bayesbinn_jax.train.run_folder`).

  Raises:
    RunError: bad options, or an output directory in the way (nothing written).
    RunFolderError: ``out_dir`` is in use by another run, holds files of no run of ours, or
      has a path Orbax cannot write under; or, on resume, the data differ from the run's.
    DataError: the data cannot be used (nothing written).
    CheckpointError: a checkpoint that cannot be resumed.
    SavedRunError: on resume, a config.json this release cannot take over.
    NonFiniteLossError: training diverged (the last good checkpoint is kept).
    Interrupted: SIGINT or SIGTERM came (one process only): the run stopped at the next step
      boundary and saved a checkpoint there, which ``Interrupted.checkpoint`` names; resuming
      gives the summary of the run not interrupted.
  """
  with StopRequest(enabled=process_count() == 1) as stop:
    if not is_main_process():
      return _run_experiment(options, console, None, stop)
    try:
      _check_out_dir(options)
    except RunError:
      run_folder.check_free(options.out_dir)  # a live run there is the first thing to say
      raise
    fresh = _no_run_to_resume(options)
    with run_folder.claimed(options.out_dir) as folder_note:
      return _run_experiment(options, console, " ".join(n for n in (fresh, folder_note) if n) or None,
                             stop)


def _run_experiment(options: RunOptions, console: Console | None, folder_note: str | None,
                    stop: StopRequest | None = None) -> dict:
  """:func:`run_experiment` once ``out_dir`` is locked (process 0); ``folder_note`` is said."""
  main = is_main_process()  # only process 0 writes outputs; every process computes (collectives)
  console = (console or Console(quiet=options.quiet)) if main else Console.silent()
  spec = get_spec(options.experiment)
  if main:
    _check_out_dir(options)  # process 0 only: the others would find its first files
  if options.resume:
    _check_saved_config(options, _metadata(options, spec, 0))
  prepared = prepare(spec, options)
  checkpointer = Checkpointer(_path(options, "checkpoints"))
  state, start, notes = _start(prepared, options, checkpointer, console)
  writer = MetricWriter(options.out_dir) if main else None
  try:
    records = writer.start(start) if writer else read_records(_path(options, "metrics.jsonl"), start)
  except MetricsFileError as error:
    raise RunError(f"{error}; the run cannot be resumed: use another --out.") from error
  left_out = data.examples_left_out(prepared.run_data.dataset.num_train, options.config.run.batch_size)
  _say_notes(prepared, console, [folder_note, *notes, *prepared.run_data.notes, writer.note if writer else None],
             left_out)
  state = _train(prepared, options, state, start, checkpointer, writer, records, console, stop)
  latest = checkpointer.latest()
  checkpointer.close()
  if writer:
    writer.close()
  if stop is not None and stop.requested:  # after the last step: the last checkpoint holds the trained run
    raise Interrupted(stop.signum, None if latest is None else os.path.join(checkpointer.directory, str(latest)),  # type: ignore[arg-type]
                      options.config.run.epochs * options.config.num_tasks, 0, prepared.training.steps_per_epoch)
  summary = report.summarize(spec, options, records, devices=len(prepared.training.mesh.devices.flat))
  summary.update(processes=process_count(), shard_state=options.shard_state,
                 state_bytes_per_device=state_bytes_per_device(state.opt_state))
  predictives = measure(prepared, options, state, summary) if records else []
  for note in report.calibration_notes(summary):
    console.line(f"note: {note}")
  draw_figures(prepared, options, options.out_dir, summary, state, predictives, records)
  write_summary(options.out_dir, summary, console)
  return summary


def _start(prepared: Prepared, options: RunOptions, checkpointer: Checkpointer,
           console: Console) -> tuple[TrainState, int, list[str | None]]:
  """A resumed run's newest intact checkpoint and epoch (its data checked against the
  fingerprint it saved), or a new run's initial state after writing config.json and the
  data's fingerprint. Returns the state, the epochs done and notes to say."""
  main, spec = is_main_process(), prepared.spec
  fingerprint = dataset_fingerprint(prepared.run_data.dataset)
  source = {"data_file": options.data_file, "data_dir": options.data_dir}
  data_note = None
  if main and options.resume and os.path.exists(_path(options, "config.json")):
    data_note = run_folder.check_data(options.out_dir, fingerprint, source)
  resuming = options.resume and checkpointer.latest() is not None
  if options.resume and not resuming and os.path.exists(_path(options, "summary.json")):
    raise RunError(
        f"--out {options.out_dir} holds a finished run (summary.json) but no checkpoint to resume "
        "from; choose another --out. Nothing was changed.")
  os.makedirs(options.out_dir, exist_ok=True)
  if not resuming:
    if main:
      run_folder.write_data_fingerprint(options.out_dir, fingerprint, source)
      write_json_atomic(_path(options, "config.json"), _config_json(prepared, options))
    return prepared.state, 0, [data_note]
  state, start, skipped = restore(prepared, options, checkpointer, "resumed from")
  total = options.config.run.epochs * options.config.num_tasks
  step = int(checkpointer.progress.get("step", 0))
  where = (f"at step {step} of {prepared.training.steps_per_epoch} of epoch {start + 1}" if step
           else f"after epoch {start}")
  console.line(f"resuming {spec.name} / {options.optimizer} {where} of {total}")
  if main and data_note:
    run_folder.write_data_fingerprint(options.out_dir, fingerprint, source)
  return state, start, [data_note, *skipped]


def _config_json(prepared: Prepared, options: RunOptions) -> dict:
  """What OUT/config.json holds: the settings (``config.SCHEMA_VERSION``), the data, the layout."""
  return {
      "schema_version": SCHEMA_VERSION, "experiment": prepared.spec.name, "optimizer": options.optimizer,
      "config": _metadata(options, prepared.spec, 0)["config"], "data": prepared.run_data.describe(),
      "data_file": options.data_file, "data_dir": options.data_dir,
      "devices": len(prepared.training.mesh.devices.flat), "processes": process_count(),
      "shard_state": options.shard_state, "version": __version__}


def _say_notes(prepared: Prepared, console: Console, notes: list[str | None], left_out: int = 0) -> None:
  """The data line (with the ``left_out`` training examples each epoch drops), then each
  note given (None: none)."""
  training = prepared.training
  console.data(prepared.run_data.describe(), training.steps_per_epoch, left_out)
  for note in notes:
    if note:
      console.line(f"note: {note}")
  if training.left_whole:
    console.line(f"note: --shard-state keeps {len(training.left_whole)} leaves whole (no axis splits over "
                 f"the {len(training.mesh.devices.flat)} devices): {', '.join(training.left_whole)}")


def _train(prepared: Prepared, options: RunOptions, state: TrainState, start: int, checkpointer: Checkpointer,
           writer: MetricWriter | None, records: list, console: Console,
           stop: StopRequest | None = None) -> TrainState:
  """The epoch loop from epoch ``start``: train, evaluate every ``eval_every`` epochs and at
  each task's end, log the record, checkpoint every ``checkpoint_every`` epochs. A checkpoint
  saved inside epoch ``start + 1`` (``checkpointer.progress``) continues it from its step.
  When ``stop()`` says so at a step boundary, the state there is saved and :class:`Interrupted`
  raised (see :func:`_interrupted`)."""
  run, spec, training = options.config.run, prepared.spec, prepared.training
  total = run.epochs * options.config.num_tasks
  data_key = purpose_key(options.config.seed, "data_order")
  start_step, start_sums, start_seconds = _partial_epoch(checkpointer.progress)
  with console.progress(total * training.steps_per_epoch, start * training.steps_per_epoch + start_step) as bar:
    for global_epoch in range(start, total):
      task, epoch = divmod(global_epoch, run.epochs)
      first_step = start_step if global_epoch == start else 0
      if uses_posterior_prior(spec, options) and epoch == 0 and task > 0 and first_step == 0:
        state = state.replace(opt_state=set_prior(state.opt_state))
      seconds_before = start_seconds if global_epoch == start else 0.0
      began = time.perf_counter()
      try:
        state, record = _train_epoch(prepared, options, state, global_epoch, data_key, bar, first_step,
                                     start_sums if global_epoch == start else None, stop, seconds_before)
      except EpochStopped as stopped:
        if writer:
          writer.close()
        raise _interrupted(stop, stopped, global_epoch, (start, start_step), checkpointer, options, spec,  # type: ignore[arg-type]
                           training.steps_per_epoch, seconds_before + time.perf_counter() - began) from None
      last_of_task = epoch == run.epochs - 1
      if (global_epoch + 1) % run.eval_every == 0 or last_of_task:
        record.update(prepared.evaluator.evaluate_epoch(state, task, global_epoch))
        console.evaluation(record, total)
      if spec.continual and last_of_task:
        _add_task_matrix_row(prepared, state, task, global_epoch, record)
      if global_epoch == 0 and spec.task == "classification":
        _say_stall_note(prepared, options, record, console)
      records.append(record)
      if writer:
        writer.write(record)
      if (global_epoch + 1) % run.checkpoint_every == 0 or last_of_task:
        checkpointer.save(global_epoch + 1, state, _metadata(options, spec, global_epoch + 1))
  return state


def _say_stall_note(prepared: Prepared, options: RunOptions, record: dict, console: Console) -> None:
  """The note of :func:`stalled_training_note` after the first epoch, when it has one."""
  dataset = prepared.run_data.dataset
  note = stalled_training_note(record["train_loss"], dataset.num_classes, options.optimizer,
                               options.config.as_dict(), dataset.num_train,
                               prepared.training.steps_per_epoch)
  if note:
    console.line(f"note: {note}")


def _train_epoch(prepared: Prepared, options: RunOptions, state: TrainState, global_epoch: int,
                 data_key: jax.Array, bar: Any, start_step: int = 0, sums: dict | None = None,
                 stop: StopRequest | None = None, seconds_before: float = 0.0) -> tuple[TrainState, dict]:
  """One epoch of training (from ``start_step`` with the metric ``sums`` and the ``seconds_before``
  of the steps before, trained by an interrupted process; :class:`EpochStopped` when ``stop()``);
  the state and the epoch's record (training seconds, loss, accuracy, lr, task)."""
  run, training, run_data = options.config.run, prepared.training, prepared.run_data
  task = global_epoch // run.epochs
  began = time.perf_counter()
  state, train = train_epoch(
      state, training.train_step, run_data.dataset.x_train, run_data.preprocessing.targets,
      batch_size=run.batch_size, seed=data_key, epoch=global_epoch, inputs=run_data.inputs(task),
      mesh=training.mesh, augment=data.augment_cifar if run.augment else None,
      max_nonfinite_steps=run.max_nonfinite_steps, progress=bar, start_step=start_step, sums=sums, stop=stop)
  record = {"epoch": global_epoch + 1, "seconds": seconds_before + time.perf_counter() - began,
            **{f"train_{k}": v for k, v in train.items()}}
  if training.method.schedule is not None:
    record["lr"] = float(training.method.schedule(global_epoch * training.steps_per_epoch))
  if prepared.spec.continual:
    record["task"] = task + 1
  return state, record


def _add_task_matrix_row(prepared: Prepared, state: TrainState, task: int, global_epoch: int,
                         record: dict) -> None:
  """Continual learning, at a task's end: the test accuracy, NLL and ECE of every task so far
  (earlier tasks evaluated here; the current one already is, in ``record``)."""
  ds = prepared.run_data.dataset
  prefix = "mc_test" if prepared.training.predict_mc is not None else "test"
  tasks = [prepared.evaluator.evaluate(state, ds.x_test, ds.y_test, "test", t, global_epoch)
           for t in range(task)] + [record]
  for metric, name in (("accuracy", "accuracies"), ("nll", "nlls"), ("ece", "eces")):
    record[f"task_test_{name}"] = [result[f"{prefix}_{metric}"] for result in tasks]


# ----------------------------------------------------------------------------- evaluation of a saved run
EVALUATION_DIR = "evaluation"


def evaluate_run(options: RunOptions, console: Console | None = None, *, saved: SavedRun | None = None) -> dict:
  """Evaluates the last checkpoint of the run in ``options.out_dir`` again.

  The experiment, optimizer and settings come from the run's ``config.json``
  (``saved``, read when not given; ``options.config`` is its config with changes
  to ``config.evaluation_keys()`` only), the data from
  ``options.data_file``/``data_dir`` or else the run's own. Measures what a
  finished classification run reports (the test metrics of the mode network and
  MC predictive, temperature scaling, uncertainty metrics, ``ood_auroc`` with
  ``options.ood_data_file``) and writes ``out_dir/evaluation/``: ``summary.json``
  (with ``evaluated_epoch``) and the figures drawn from the final state
  (reliability, OOD entropy, the spec's decision maps; none when
  ``options.figures`` is False); the files of a previous evaluation there are
  replaced, nothing else in ``out_dir`` changes. One process only.

  Raises:
    SavedRunError: no readable config.json, or one this release cannot take over.
    EvaluationChangeError: ``options.config`` changes another setting.
    RunError: no checkpoint.
    DataError: the data or OOD file cannot be used.
    CheckpointError: the checkpoint does not fit the saved config.
  """
  console = console or Console(quiet=options.quiet)
  saved = saved or read_saved_run(options.out_dir)
  run_folder.check_free(options.out_dir)  # not while a run trains there (it prunes its checkpoints)
  check_evaluation(saved.config, options.config)
  own_data = options.data_file is None and options.data_dir is None
  options = dataclasses.replace(
      options, cl_prior=saved.cl_prior or "posterior",
      data_file=saved.data_file if own_data else options.data_file,
      data_dir=saved.data_dir if own_data else options.data_dir)
  prepared = prepare(get_spec(options.experiment), options)
  checkpointer = Checkpointer(_path(options, "checkpoints"))
  if checkpointer.latest() is None:
    raise RunError(f"--out {options.out_dir}: no checkpoint to evaluate (the run saved none yet).")
  state, epoch, notes = restore(prepared, options, checkpointer, "evaluating")
  checkpointer.close()
  for note in notes:
    console.line(f"note: {note}")
  summary = _evaluation_summary(prepared, options, state, epoch)
  predictives = measure(prepared, options, state, summary)
  for note in report.calibration_notes(summary):
    console.line(f"note: {note}")
  out_dir = _path(options, EVALUATION_DIR)
  os.makedirs(out_dir, exist_ok=True)
  draw_figures(prepared, options, out_dir, summary, state, predictives)
  console.line(f"evaluated {options.experiment} / {options.optimizer} after epoch {epoch}")
  write_summary(out_dir, summary, console)
  return summary


def _evaluation_summary(prepared: Prepared, options: RunOptions, state: TrainState, epoch: int) -> dict:
  """The evaluated checkpoint's identity and its metrics on the last task it trained."""
  config = options.config
  task = min((epoch - 1) // config.run.epochs, config.num_tasks - 1) if prepared.spec.continual else 0
  return {"experiment": options.experiment, "optimizer": options.optimizer, "evaluated_epoch": epoch,
          "seed": config.seed, "test_samples": config.test_samples,
          "ood_data_file": options.ood_data_file, "version": __version__,
          **prepared.evaluator.evaluate_epoch(state, task, epoch - 1)}


# ----------------------------------------------------------------------------- outputs
def _path(options: RunOptions, name: str) -> str:
  return os.path.join(options.out_dir, name)


def _metadata(options: RunOptions, spec: ExperimentSpec, epoch: int) -> dict:
  """What a checkpoint must match to be resumed, and the run's progress."""
  return {
      "schema_version": SCHEMA_VERSION,
      "experiment": spec.name,
      "optimizer": options.optimizer,
      "config": {**options.config.as_dict(), "cl_prior": options.cl_prior if spec.continual else None},
      "progress": {"epoch": epoch},
  }


def _partial_epoch(progress: Mapping[str, Any]) -> tuple[int, dict | None, float]:
  """The steps done of the epoch after ``progress["epoch"]``, their metric sums and the seconds
  they took (0 from a checkpoint of release 0.2.0 and before, which did not save them), saved
  by a run stopped by a signal (:func:`_interrupted`); ``(0, None, 0.0)`` at an epoch boundary."""
  step = int(progress.get("step", 0))
  if not step:
    return 0, None, 0.0
  sums = {key: np.asarray(value, dtype=jnp.dtype(dtype)) for key, (value, dtype) in progress["sums"].items()}
  return step, sums, float(progress.get("seconds", 0.0))


def _interrupted(stop: StopRequest, stopped: EpochStopped, global_epoch: int, resumed_at: tuple[int, int],
                 checkpointer: Checkpointer, options: RunOptions, spec: ExperimentSpec,
                 steps_per_epoch: int, seconds: float) -> Interrupted:
  """Saves the state where a signal stopped the run (``stopped.step`` steps into epoch
  ``global_epoch + 1``), unless this process trained nothing since ``resumed_at``; returns the
  :class:`Interrupted` that names the checkpoint to resume from.

  A stop inside an epoch is saved as checkpoint ``global_epoch + 1`` with progress
  ``{"epoch": global_epoch, "step": ..., "sums": ..., "seconds": ...}`` (the metric sums as
  ``[value, dtype]``, exact in JSON; ``seconds`` of training in the epoch so far, so that the
  resumed epoch's record counts them): the end of that epoch saves over it."""
  meta = _metadata(options, spec, global_epoch)
  if (global_epoch, stopped.step) == resumed_at:
    index = checkpointer.latest()
  elif stopped.step == 0:
    index = global_epoch
    if checkpointer.latest() != index:
      checkpointer.save(index, stopped.state, meta)
  else:
    index = global_epoch + 1
    sums = {key: [float(np.asarray(value)), str(np.asarray(value).dtype)] for key, value in stopped.sums.items()}
    checkpointer.save(index, stopped.state,
                      {**meta, "progress": {"epoch": global_epoch, "step": stopped.step, "sums": sums,
                                            "seconds": seconds}})
  checkpointer.close()
  folder = None if index is None else os.path.join(checkpointer.directory, str(index))
  return Interrupted(stop.signum, folder, global_epoch, stopped.step, steps_per_epoch)  # type: ignore[arg-type]


def _no_run_to_resume(options: RunOptions) -> str | None:
  """The note for ``resume`` into a folder that does not exist: a new run starts there (a run
  killed before it made its folder resumes this way), and a mistyped path is visible."""
  if options.resume and not os.path.lexists(options.out_dir):
    return (f"--out {options.out_dir} did not exist, so there was no run to resume: a new run "
            "starts there (check the path if you meant to continue another run).")
  return None


def _check_out_dir(options: RunOptions) -> None:
  """Raises RunError when ``out_dir`` cannot be a directory, or holds a run and ``resume`` is
  off."""
  folder = os.path.abspath(options.out_dir)
  while not os.path.exists(folder):
    folder = os.path.dirname(folder)
  if not os.path.isdir(folder):
    raise RunError(f"--out {options.out_dir}: {folder} is a file, not a directory; choose another --out.")
  existing = [f for f in RESULT_FILES if os.path.exists(_path(options, f))]
  if existing and not options.resume:
    raise RunError(
        f"--out {options.out_dir} already holds a run ({', '.join(existing)}); pass --resume "
        "to continue it, or choose another --out. Nothing was changed.")


def _check_saved_config(options: RunOptions, expected: Mapping[str, Any]) -> None:
  """On resume: the config.json written when the run in ``out_dir`` started (migrated when
  an earlier release wrote it) must hold this run's settings (checked before any
  checkpoint exists, e.g. after a kill in epoch 1)."""
  path = _path(options, "config.json")
  if not os.path.exists(path):
    return
  try:
    with open(path) as handle:
      saved = json.load(handle)
  except (OSError, ValueError) as error:
    raise _cannot_resume(path, f"is unreadable ({error!r})") from error
  if not isinstance(saved, dict):
    raise _cannot_resume(path, "holds no run config")
  check_metadata(migrate(saved, path), expected, path, ignored=resumable_keys())


def _cannot_resume(path: str, problem: str) -> RunError:
  """The error of a resumption refused because of the output file ``path``."""
  return RunError(f"{path} {problem}; the run cannot be resumed: use another --out.")
