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
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from bayesbinn_jax import data
from bayesbinn_jax._version import __version__
from bayesbinn_jax.atomic import write_json_atomic
from bayesbinn_jax.experiments import report
from bayesbinn_jax.experiments.console import Console
from bayesbinn_jax.experiments.specs import DataSource, ExperimentSpec, Preprocessing, get_spec, preprocessing
from bayesbinn_jax.optim.bayesbinn import BayesBiNNState
from bayesbinn_jax.optim.posterior import posterior_as_prior
from bayesbinn_jax.data.fingerprint import dataset_fingerprint
from bayesbinn_jax.train import run_folder
from bayesbinn_jax.train.checkpoint import Checkpointer, check_metadata
from bayesbinn_jax.train.engine import TrainState, create_train_state, make_predict, make_predict_mc, make_train_step
from bayesbinn_jax.train.keys import purpose_key
from bayesbinn_jax.train.loop import NonFiniteLossError, predict_batches, train_epoch
from bayesbinn_jax.train.methods import Method, build_method
from bayesbinn_jax.train.metric_writer import MetricsFileError, MetricWriter, read_records
from bayesbinn_jax.train.metrics import classification_metrics, regression_metrics
from bayesbinn_jax.train.distributed import is_main_process, process_count
from bayesbinn_jax.train.sharding import (check_batch_size, data_mesh, pin_layout, place, replicate, shard_state,
                                          state_bytes_per_device)

RESULT_FILES = ("config.json", "metrics.jsonl", "summary.json")
MC_EVAL_CHUNK = 10
"""Monte Carlo networks evaluated at once (``jax.lax.map`` batch): bounds evaluation memory."""


class RunError(ValueError):
  """A run that cannot start: bad options or an output directory in the way."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
  """Everything that defines a run (the CLI's arguments).

  ``config`` is the full preset with overrides applied, including ``seed``.
  """

  experiment: str
  optimizer: str
  config: Mapping[str, Any]
  out_dir: str
  data_file: str | None = None
  data_dir: str | None = None
  resume: bool = False
  cl_prior: str = "posterior"
  quiet: bool = False
  ood_data_file: str | None = None
  shard_state: bool = False
  figures: bool = True
  """False: no PNG figures, nor the arrays drawn in them (e.g. ``two_moons_grid.npz``)."""


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class RunData:
  """The checked data of a run and how they become network inputs.

  ``permutations`` holds one pixel permutation per continual-learning task
  (None otherwise); :meth:`inputs` gives task ``t``'s input function.
  ``note`` says how the data were fitted to the network (channels-first images
  transposed), or is None.
  """

  dataset: data.ArrayDataset | data.RegressionDataset
  preprocessing: Preprocessing
  num_outputs: int
  permutations: np.ndarray | None
  note: str | None = None

  def inputs(self, task: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    if self.permutations is None:
      return self.preprocessing.inputs
    permutation = self.permutations[task]
    return lambda x: self.preprocessing.inputs(data.permute_pixels(x, permutation))

  def describe(self) -> dict[str, Any]:
    """Shapes and sizes for config.json and the console."""
    ds = self.dataset
    described = {"input_shape": list(ds.x_train.shape[1:]), "num_train": ds.num_train,
                 "num_test": ds.num_test, "num_outputs": self.num_outputs}
    if isinstance(ds, data.ArrayDataset):
      described.update(num_classes=ds.num_classes, num_val=ds.num_val, dtype=str(ds.x_train.dtype))
    return described


def load_data(spec: ExperimentSpec, config: Mapping[str, Any], source: DataSource) -> RunData:
  """Loads and checks the data of ``spec``, then applies ``train_subset`` and ``val_fraction``.

  ``train_subset > 0`` keeps the first that many training examples;
  ``val_fraction > 0`` holds out a seeded validation part.
  """
  dataset = spec.load(config, source)
  note = None
  if spec.image_shape is not None:
    where = source.data_file or source.data_dir or f"tfds:{spec.name}"
    dataset, note = data.fit_input_shape(dataset, spec.image_shape, where)
  if config["train_subset"]:
    count = min(int(config["train_subset"]), dataset.num_train)
    dataset = dataclasses.replace(dataset, x_train=dataset.x_train[:count], y_train=dataset.y_train[:count])
  if config["val_fraction"] > 0:
    if dataset.num_train < 2:
      raise RunError(
          f"val_fraction={config['val_fraction']} needs at least 2 training examples to split; the "
          f"training set has {dataset.num_train} (train_subset={config['train_subset']}).")
    dataset = data.split_validation(dataset, config["val_fraction"], config["seed"])
  permutations = None
  if spec.continual:
    pixels = int(np.prod(dataset.input_shape))
    permutations = data.task_permutations(
        int(config["num_tasks"]), pixels, purpose_key(config["seed"], "permutations"))
  num_outputs = dataset.num_classes if spec.task == "classification" else 1
  return RunData(dataset, preprocessing(spec, dataset), num_outputs, permutations, note)


def _load_ood_images(spec: ExperimentSpec, options: RunOptions, run_data: RunData) -> np.ndarray | None:
  """The ``--ood-data-file`` images, checked against the training images' shape (before training)."""
  if options.ood_data_file is None:
    return None
  if spec.task != "classification":
    raise RunError(f"--ood-data-file needs a classification experiment; {spec.name} is a regression.")
  return data.load_ood_images(options.ood_data_file, run_data.dataset.input_shape)


# ----------------------------------------------------------------------------- training
@dataclasses.dataclass(frozen=True)
class Training:
  """What trains and evaluates: the method, the compiled steps, the device mesh and,
  with ``--shard-state``, the train state's layout over it (``layout``) and the
  leaves no weight axis could split (``left_whole``, replicated)."""

  method: Method
  train_step: Callable[..., Any]
  predict: Callable[..., Any]
  predict_mc: Callable[..., Any] | None
  steps_per_epoch: int
  mesh: jax.sharding.Mesh
  layout: Any = None
  left_whole: tuple[str, ...] = ()

  def place(self, state: TrainState) -> TrainState:
    """``state`` on the mesh: split as :attr:`layout` says (``--shard-state``), else replicated."""
    return replicate(self.mesh, state) if self.layout is None else place(state, self.layout)


def build_training(spec: ExperimentSpec, options: RunOptions, run_data: RunData) -> tuple[Training, TrainState]:
  """The method, the network, the initial train state (on the mesh) and the jitted steps."""
  config = options.config
  dataset = run_data.dataset
  batch_size = int(config["batch_size"])
  if batch_size > dataset.num_train:
    raise RunError(
        f"batch_size={batch_size} is larger than the {dataset.num_train} training examples "
        f"(after train_subset and val_fraction); pass --set batch_size={dataset.num_train} or less.")
  mesh = data_mesh()
  check_batch_size(mesh, batch_size)
  check_batch_size(mesh, int(config["eval_batch_size"]), "eval_batch_size")
  steps_per_epoch = dataset.num_train // batch_size
  method = build_method(options.optimizer, config, steps_per_epoch=steps_per_epoch,
                        train_set_size=dataset.num_train, key=purpose_key(config["seed"], "optimizer"))
  model = spec.network(config, method.quantizer, run_data.num_outputs)
  sample_input = run_data.inputs()(dataset.x_train[:1])
  state = create_train_state(model, method, sample_input, config["seed"])
  if _uses_prior(spec, options):
    # The prior of the first task is zero; from the second on it is the last posterior.
    state = state.replace(opt_state=_set_prior(state.opt_state, zero=True))
  train_step = make_train_step(method, spec.task, mc_loop=config.get("mc_loop", "vmap"))
  layout, left_whole = None, []
  if options.shard_state:
    state, layout, left_whole = shard_state(mesh, state, num_samples=method.num_samples)
    train_step = pin_layout(train_step, mesh, layout)
  else:
    state = replicate(mesh, state)
  test_samples = int(config.get("test_samples", 0))
  training = Training(
      method=method,
      train_step=train_step,
      predict=make_predict(method, spec.task),
      predict_mc=(make_predict_mc(method, spec.task, test_samples, batch_size=MC_EVAL_CHUNK)
                  if test_samples else None),
      steps_per_epoch=steps_per_epoch,
      mesh=mesh,
      layout=layout,
      left_whole=tuple(left_whole),
  )
  return training, state


def _uses_prior(spec: ExperimentSpec, options: RunOptions) -> bool:
  return spec.continual and options.optimizer == "bayesbinn" and options.cl_prior == "posterior"


def _set_prior(opt_state: Any, *, zero: bool = False) -> Any:
  """The optimizer state with BayesBiNN's prior set to its posterior (a new task), or to zero."""

  def replace(node: Any) -> Any:
    if isinstance(node, BayesBiNNState):
      prior = jax.tree.map(jnp.zeros_like, node.lam) if zero else posterior_as_prior(node.lam)
      return node._replace(prior_lam=prior)
    return node

  return jax.tree.map(replace, opt_state, is_leaf=lambda n: isinstance(n, BayesBiNNState))


# ----------------------------------------------------------------------------- evaluation
@dataclasses.dataclass(frozen=True)
class Evaluator:
  """Evaluates the train state on one split: the mode network, and the Monte Carlo
  predictive when ``test_samples > 0``."""

  spec: ExperimentSpec
  training: Training
  run_data: RunData
  batch_size: int
  seed: int

  def predictions(self, state: TrainState, x: np.ndarray, task: int = 0, *,
                  key: jax.Array | None = None) -> np.ndarray:
    """Mode predictions (``key`` None) or Monte Carlo ones: class probabilities (N, K),
    or regression outputs in the data's units, (N,) for the mode and (C, N) for MC."""
    predict = self.training.predict if key is None else self.training.predict_mc
    sample_axis = 1 if key is not None and self.spec.task == "regression" else None
    out = predict_batches(predict, state, x, batch_size=self.batch_size, inputs=self.run_data.inputs(task),
                          mesh=self.training.mesh, key=key, sample_axis=sample_axis)
    if self.spec.task == "regression":
      out = self.run_data.preprocessing.to_data_units(out[..., 0])
    return out

  def evaluate(self, state: TrainState, x: np.ndarray, y: np.ndarray, prefix: str, task: int,
               epoch: int) -> dict[str, float]:
    """``{prefix}_*`` metrics of the mode network and ``mc_{prefix}_*`` of the predictive."""
    mode = self.predictions(state, x, task)
    if not np.all(np.isfinite(mode)):
      raise NonFiniteLossError(
          f"the network's {prefix} predictions are NaN or Inf after epoch {epoch + 1}: the weights "
          "diverged; lower the learning rate.")
    if self.spec.task == "regression":
      result = {f"{prefix}_rmse": float(np.sqrt(np.mean((mode.reshape(-1) - y) ** 2)))}
    else:
      result = {f"{prefix}_{k}": v for k, v in classification_metrics(mode, y).items()}
    if self.training.predict_mc is not None:
      key = jax.random.fold_in(purpose_key(self.seed, "evaluation"), epoch)
      mc = self.predictions(state, x, task, key=key)
      metrics = (regression_metrics(mc.mean(axis=0), mc.std(axis=0), y) if self.spec.task == "regression"
                 else classification_metrics(mc, y))
      result.update({f"mc_{prefix}_{k}": v for k, v in metrics.items()})
    return result

  def evaluate_epoch(self, state: TrainState, task: int, epoch: int) -> dict[str, float]:
    """Regression: the training split (Snelson's test inputs have no targets).
    Classification: the validation split when there is one, and the test split."""
    ds = self.run_data.dataset
    if self.spec.task == "regression":
      return self.evaluate(state, ds.x_train, ds.y_train, "train", task, epoch)
    result = {}
    if ds.has_validation:
      result.update(self.evaluate(state, ds.x_val, ds.y_val, "val", task, epoch))
    result.update(self.evaluate(state, ds.x_test, ds.y_test, "test", task, epoch))
    return result


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
    NonFiniteLossError: training diverged (the last good checkpoint is kept).
  """
  if not is_main_process():
    return _run_experiment(options, console, None)
  _check_out_dir(options)
  with run_folder.claimed(options.out_dir) as folder_note:
    return _run_experiment(options, console, folder_note)


def _run_experiment(options: RunOptions, console: Console | None, folder_note: str | None) -> dict:
  """:func:`run_experiment` once ``out_dir`` is locked (process 0); ``folder_note`` is said."""
  console = console or Console(quiet=options.quiet)
  spec = get_spec(options.experiment)
  config = dict(options.config)
  main = is_main_process()  # only process 0 writes outputs; every process computes (collectives)
  if not main:
    console = Console.silent()
  else:
    _check_out_dir(options)  # process 0 only: the others would find its first files
  if options.resume:
    _check_saved_config(options, _metadata(options, spec, 0))
  run_data = load_data(spec, config, DataSource(options.data_file, options.data_dir))
  fingerprint = dataset_fingerprint(run_data.dataset)
  data_source = {"data_file": options.data_file, "data_dir": options.data_dir}
  data_note = None
  if main and options.resume and os.path.exists(_path(options, "config.json")):
    data_note = run_folder.check_data(options.out_dir, fingerprint, data_source)
  ood_images = _load_ood_images(spec, options, run_data)
  training, state = build_training(spec, options, run_data)
  evaluator = Evaluator(spec, training, run_data, int(config["eval_batch_size"]), int(config["seed"]))

  checkpointer = Checkpointer(_path(options, "checkpoints"))
  if options.resume and checkpointer.latest() is None and os.path.exists(_path(options, "summary.json")):
    raise RunError(
        f"--out {options.out_dir} holds a finished run (summary.json) but no checkpoint to resume "
        "from; choose another --out. Nothing was changed.")
  os.makedirs(options.out_dir, exist_ok=True)
  epochs = int(config["epochs"])
  num_tasks = int(config["num_tasks"]) if spec.continual else 1
  total = epochs * num_tasks
  start = 0
  if options.resume and checkpointer.latest() is not None:
    state, meta = checkpointer.restore_latest(state, _metadata(options, spec, 0))
    state = training.place(state)
    start = int(meta["progress"]["epoch"])
    console.line(f"resuming {spec.name} / {options.optimizer} after epoch {start} of {total}")
    if main and data_note:
      run_folder.write_data_fingerprint(options.out_dir, fingerprint, data_source)
  elif main:
    run_folder.write_data_fingerprint(options.out_dir, fingerprint, data_source)
    write_json_atomic(_path(options, "config.json"), {
        "experiment": spec.name, "optimizer": options.optimizer,
        "config": _metadata(options, spec, 0)["config"], "data": run_data.describe(),
        "data_file": options.data_file, "data_dir": options.data_dir,
        "devices": len(training.mesh.devices.flat), "processes": process_count(),
        "shard_state": options.shard_state, "version": __version__})
  writer = MetricWriter(options.out_dir) if main else None
  try:
    records = writer.start(start) if writer else read_records(_path(options, "metrics.jsonl"), start)
  except MetricsFileError as error:
    raise RunError(f"{error}; the run cannot be resumed: use another --out.") from error
  console.data(run_data.describe(), training.steps_per_epoch)
  skipped = [f"skipped the damaged checkpoint {error.folder} (it {error.problem}); resumed from the newest "
             "intact one" for error in checkpointer.skipped]
  for note in (folder_note, data_note, *skipped, run_data.note, writer and writer.note):
    if note:
      console.line(f"note: {note}")
  if training.left_whole:
    console.line(f"note: --shard-state keeps {len(training.left_whole)} leaves whole (no axis splits over "
                 f"the {len(training.mesh.devices.flat)} devices): {', '.join(training.left_whole)}")

  augment = data.augment_cifar if config.get("augment") else None
  data_key = purpose_key(config["seed"], "data_order")
  ds = run_data.dataset
  with console.progress(total * training.steps_per_epoch, start * training.steps_per_epoch) as bar:
    for global_epoch in range(start, total):
      task, epoch = divmod(global_epoch, epochs)
      if _uses_prior(spec, options) and epoch == 0 and task > 0:
        state = state.replace(opt_state=_set_prior(state.opt_state))
      began = time.perf_counter()
      state, train = train_epoch(
          state, training.train_step, ds.x_train, run_data.preprocessing.targets,
          batch_size=int(config["batch_size"]), seed=data_key, epoch=global_epoch,
          inputs=run_data.inputs(task), mesh=training.mesh, augment=augment,
          max_nonfinite_steps=int(config["max_nonfinite_steps"]), progress=bar)
      record = {"epoch": global_epoch + 1, "seconds": time.perf_counter() - began,
                **{f"train_{k}": v for k, v in train.items()}}
      if training.method.schedule is not None:
        record["lr"] = float(training.method.schedule(global_epoch * training.steps_per_epoch))
      if spec.continual:
        record["task"] = task + 1
      last_of_task = epoch == epochs - 1
      if (global_epoch + 1) % int(config["eval_every"]) == 0 or last_of_task:
        record.update(evaluator.evaluate_epoch(state, task, global_epoch))
        console.evaluation(record, total)
      if spec.continual and last_of_task:
        # Earlier tasks are evaluated here; the current one already is, in this record.
        prefix = "mc_test" if training.predict_mc is not None else "test"
        tasks = [evaluator.evaluate(state, ds.x_test, ds.y_test, "test", t, global_epoch)
                 for t in range(task)] + [record]
        for metric, name in (("accuracy", "accuracies"), ("nll", "nlls"), ("ece", "eces")):
          record[f"task_test_{name}"] = [result[f"{prefix}_{metric}"] for result in tasks]
      records.append(record)
      if writer:
        writer.write(record)
      if (global_epoch + 1) % int(config["checkpoint_every"]) == 0 or last_of_task:
        checkpointer.save(global_epoch + 1, state, _metadata(options, spec, global_epoch + 1))
  checkpointer.close()
  if writer:
    writer.close()

  summary = report.summarize(spec, options, records, devices=len(training.mesh.devices.flat))
  summary.update(processes=process_count(), shard_state=options.shard_state,
                 state_bytes_per_device=state_bytes_per_device(state.opt_state))
  predictives = []
  if spec.task == "classification" and records:
    measured, predictives = report.measure_uncertainty(options, state, evaluator, ood_images)
    summary.update(measured)
    if measured["temperature_fit_split"] == "train":
      console.line("note: no validation split; the temperature was fitted on the training split.")
  if options.figures:
    with contextlib.ExitStack() as stack:
      # The figures' predictions are collective: every process draws them, process 0 keeps the files.
      out_dir = options.out_dir if main else stack.enter_context(tempfile.TemporaryDirectory())
      report.figures(spec, records, report.FigureInputs(out_dir, options, summary, state, evaluator, predictives))
  if main:
    write_json_atomic(_path(options, "summary.json"), summary)
    console.results(summary, options.out_dir)
  return summary


# ----------------------------------------------------------------------------- evaluation of a saved run
EVALUATION_DIR = "evaluation"
EVALUATION_KEYS = ("test_samples", "eval_batch_size")
"""The settings an evaluation may change: how many networks the MC predictive averages
and how many examples are predicted at once (neither changes the trained state)."""


def saved_run(out_dir: str) -> dict:
  """``out_dir/config.json``: the experiment, optimizer, config and data of a run.

  Raises:
    RunError: no readable config.json in ``out_dir``.
  """
  path = os.path.join(out_dir, "config.json")
  try:
    with open(path) as handle:
      saved = json.load(handle)
  except FileNotFoundError:
    raise RunError(f"--out {out_dir}: no config.json; pass the output directory of a run.") from None
  except (OSError, ValueError) as error:
    raise RunError(f"{path} is unreadable ({error!r}); the run cannot be evaluated.") from error
  if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
    raise RunError(f"{path} holds no run config; the run cannot be evaluated.")
  return saved


def evaluate_run(options: RunOptions, console: Console | None = None) -> dict:
  """Evaluates the last checkpoint of the run in ``options.out_dir`` again.

  The experiment, optimizer and settings come from the run's ``config.json``
  (``options.config`` is that config with changes to :data:`EVALUATION_KEYS`
  only), the data from ``options.data_file``/``data_dir`` or else the run's
  own. Measures what a finished classification run reports (the test metrics
  of the mode network and MC predictive, temperature scaling, uncertainty
  metrics, ``ood_auroc`` with ``options.ood_data_file``) and writes
  ``out_dir/evaluation/``: ``summary.json`` (with ``evaluated_epoch``) and the
  figures drawn from the final state (reliability, OOD entropy, the spec's
  decision maps; none when ``options.figures`` is False); the files of a
  previous evaluation there are replaced, nothing else in ``out_dir``
  changes. One process only.

  Raises:
    RunError: no config.json or checkpoint, or a change to another setting.
    DataError: the data or OOD file cannot be used.
    CheckpointError: the checkpoint does not fit the saved config.
  """
  console = console or Console(quiet=options.quiet)
  saved = saved_run(options.out_dir)
  trained = {k: v for k, v in saved["config"].items() if k != "cl_prior"}
  changed = sorted(k for k in set(trained) | set(options.config)
                   if k not in EVALUATION_KEYS and trained.get(k) != options.config.get(k))
  if changed:
    raise RunError(f"an evaluation may change only {', '.join(EVALUATION_KEYS)}; got {', '.join(changed)}.")
  spec = get_spec(saved["experiment"])
  own_data = options.data_file is None and options.data_dir is None
  options = dataclasses.replace(
      options, experiment=spec.name, optimizer=saved["optimizer"],
      cl_prior=saved["config"].get("cl_prior") or "posterior",
      data_file=saved.get("data_file") if own_data else options.data_file,
      data_dir=saved.get("data_dir") if own_data else options.data_dir)
  config = options.config
  run_data = load_data(spec, config, DataSource(options.data_file, options.data_dir))
  ood_images = _load_ood_images(spec, options, run_data)
  training, state = build_training(spec, options, run_data)
  checkpointer = Checkpointer(_path(options, "checkpoints"))
  if checkpointer.latest() is None:
    raise RunError(f"--out {options.out_dir}: no checkpoint to evaluate (the run saved none yet).")
  state, meta = checkpointer.restore_latest(
      state, _metadata(dataclasses.replace(options, config=trained), spec, 0))
  checkpointer.close()
  for error in checkpointer.skipped:
    console.line(f"note: skipped the damaged checkpoint {error.folder} (it {error.problem}); evaluating the "
                 "newest intact one")
  state = training.place(state)
  epoch = int(meta["progress"]["epoch"])
  epochs = int(config["epochs"])
  task = min((epoch - 1) // epochs, int(config["num_tasks"]) - 1) if spec.continual else 0
  evaluator = Evaluator(spec, training, run_data, int(config["eval_batch_size"]), int(config["seed"]))
  summary = {"experiment": spec.name, "optimizer": options.optimizer, "evaluated_epoch": epoch,
             "seed": int(config["seed"]), "test_samples": int(config.get("test_samples", 0)),
             "ood_data_file": options.ood_data_file, "version": __version__,
             **evaluator.evaluate_epoch(state, task, epoch - 1)}
  predictives = []
  if spec.task == "classification":
    measured, predictives = report.measure_uncertainty(options, state, evaluator, ood_images)
    summary.update(measured)
  out_dir = _path(options, EVALUATION_DIR)
  os.makedirs(out_dir, exist_ok=True)
  if options.figures:
    report.prediction_figures(spec, report.FigureInputs(out_dir, options, summary, state, evaluator, predictives))
  write_json_atomic(os.path.join(out_dir, "summary.json"), summary)
  console.line(f"evaluated {spec.name} / {options.optimizer} after epoch {epoch}")
  console.results(summary, out_dir)
  return summary


# ----------------------------------------------------------------------------- outputs
def _path(options: RunOptions, name: str) -> str:
  return os.path.join(options.out_dir, name)


def _metadata(options: RunOptions, spec: ExperimentSpec, epoch: int) -> dict:
  """What a checkpoint must match to be resumed, and the run's progress."""
  return {
      "experiment": spec.name,
      "optimizer": options.optimizer,
      "config": {**options.config, "cl_prior": options.cl_prior if spec.continual else None},
      "progress": {"epoch": epoch},
  }


def _check_out_dir(options: RunOptions) -> None:
  """Raises RunError when ``out_dir`` cannot be a directory, or holds a run and
  ``resume`` is off."""
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
  """On resume: the config.json written when the run in ``out_dir`` started must hold
  this run's settings (checked before any checkpoint exists, e.g. after a kill in epoch 1)."""
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
  check_metadata(saved, expected, path)


def _cannot_resume(path: str, problem: str) -> RunError:
  """The error of a resumption refused because of the output file ``path``."""
  return RunError(f"{path} {problem}; the run cannot be resumed: use another --out.")

