"""Runs one experiment end to end: data, training, evaluation, checkpoints, outputs.

Outputs in ``out_dir``: ``config.json``; ``metrics.jsonl`` (one line per
epoch); ``summary.json``; ``checkpoints/`` (Orbax, every epoch); figures as PNG.
A run that is interrupted and restarted with ``resume=True`` continues from
the last complete checkpoint and ends with the same summary as an
uninterrupted run: batch order, dropout and BayesBiNN samples are functions of
(seed, epoch, step) and of the checkpointed state only.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

import bayesbinn_jax
from bayesbinn_jax import data
from bayesbinn_jax.atomic import write_atomic, write_json_atomic
from bayesbinn_jax.experiments import plots
from bayesbinn_jax.experiments.datasets import input_transform, load_dataset, make_model
from bayesbinn_jax.optim.bayesbinn import BayesBiNNState
from bayesbinn_jax.optim.posterior import posterior_as_prior
from bayesbinn_jax.train.checkpoint import Checkpointer, check_metadata
from bayesbinn_jax.train.engine import create_train_state, make_predict, make_predict_mc, make_train_step
from bayesbinn_jax.train.loop import NonFiniteLossError, predict_batches, train_epoch
from bayesbinn_jax.train.methods import build_method, learning_rate_schedule
from bayesbinn_jax.train.metrics import classification_metrics, regression_metrics, reliability_bins
from bayesbinn_jax.train.sharding import check_batch_size, data_mesh, replicate

RESULT_FILES = ("config.json", "metrics.jsonl", "summary.json")


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


def _check_out_dir(options: RunOptions) -> None:
  """Raises RunError when ``out_dir`` cannot be a directory, or holds a run and
  ``resume`` is off."""
  folder = os.path.abspath(options.out_dir)
  while not os.path.exists(folder):
    folder = os.path.dirname(folder)
  if not os.path.isdir(folder):
    raise RunError(f"--out {options.out_dir}: {folder} is a file, not a directory; choose another --out.")
  existing = [f for f in RESULT_FILES if os.path.exists(os.path.join(options.out_dir, f))]
  if existing and not options.resume:
    raise RunError(
        f"--out {options.out_dir} already holds a run ({', '.join(existing)}); pass --resume "
        "to continue it, or choose another --out. Nothing was changed."
    )


def _cannot_resume(path: str, problem: str) -> RunError:
  """The error of a resumption refused because of the output file ``path``."""
  return RunError(f"{path} {problem}; the run cannot be resumed: use another --out.")


def _read_records(path: str, upto_epoch: int) -> list[dict]:
  """The records of epochs 1 to ``upto_epoch`` in ``path`` (a resumed run's metrics.jsonl).

  Raises RunError unless the file is readable and holds each of those epochs
  once, in order: a summary computed from fewer records would be silently wrong.
  """
  records = []
  try:
    if os.path.exists(path):
      with open(path) as handle:
        records = [json.loads(line) for line in handle if line.strip()]
    records = [r for r in records if r["epoch"] <= upto_epoch]
  except (OSError, ValueError, KeyError, TypeError) as error:
    raise _cannot_resume(path, f"is unreadable ({error!r})") from error
  if [r["epoch"] for r in records] != list(range(1, upto_epoch + 1)):
    raise _cannot_resume(
        path, f"does not hold epochs 1 to {upto_epoch} once each, as checkpoint {upto_epoch} needs")
  return records


def _write_records(path: str, records: list[dict]) -> None:
  write_atomic(path, "".join(json.dumps(record) + "\n" for record in records))


class Experiment:
  """One configured run; :meth:`run` trains and writes every output."""

  def __init__(self, options: RunOptions):
    _check_out_dir(options)
    self.options = options
    self.config = dict(options.config)
    self.experiment = options.experiment
    self.task = "regression" if self.experiment == "snelson" else "classification"
    self.continual = self.experiment == "permuted-mnist"
    if options.resume:
      self._check_saved_config()
    self.dataset = load_dataset(
        self.experiment, self.config, data_file=options.data_file, data_dir=options.data_dir)
    regression = self.task == "regression"
    self.train_targets = self.dataset.y_train
    if regression:
      # The output BatchNorm has no gain or bias, so the network's outputs are standardised:
      # train on standardised inputs and targets; metrics and figures are in the data's units.
      x_mean, x_std = float(np.mean(self.dataset.x_train)), float(np.std(self.dataset.x_train))
      self.y_mean, self.y_std = float(np.mean(self.train_targets)), float(np.std(self.train_targets))
      self.inputs = lambda x: ((np.asarray(x, np.float32) - x_mean) / x_std).astype(np.float32)
      self.train_targets = ((self.train_targets - self.y_mean) / self.y_std).astype(np.float32)
    else:
      self.inputs = input_transform(self.experiment, self.dataset)
    num_outputs = 1 if regression else self.dataset.num_classes
    self.mesh = data_mesh()
    self.batch_size = int(self.config["batch_size"])
    if self.batch_size > self.dataset.num_train:
      raise RunError(
          f"batch_size={self.batch_size} is larger than the {self.dataset.num_train} training examples "
          f"(after train_subset and val_fraction); pass --set batch_size={self.dataset.num_train} or less.")
    check_batch_size(self.mesh, self.batch_size)
    check_batch_size(self.mesh, int(self.config["eval_batch_size"]), "eval_batch_size")
    self.steps_per_epoch = self.dataset.num_train // self.batch_size
    self.num_tasks = int(self.config.get("num_tasks", 1)) if self.continual else 1
    if self.continual:
      pixels = int(np.prod(self.dataset.input_shape))
      self.permutations = data.task_permutations(self.num_tasks, pixels, self.config["seed"])
    self.use_prior = (self.continual and options.optimizer == "bayesbinn"
                      and options.cl_prior == "posterior")
    model_probe = make_model(self.experiment, "none", num_outputs)
    sample_input = jnp.asarray(self.inputs(self.dataset.x_train[:1]))
    prior = None
    if self.use_prior:
      shapes = jax.eval_shape(lambda: model_probe.init(jax.random.PRNGKey(0), sample_input, train=False))
      prior = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes["params"])
    self.method = build_method(
        options.optimizer, self.config, steps_per_epoch=self.steps_per_epoch,
        train_set_size=self.dataset.num_train, prior_lambda=prior)
    self.model = make_model(self.experiment, self.method.quantizer, num_outputs)
    state = create_train_state(self.model, self.method, sample_input, jax.random.PRNGKey(self.config["seed"]))
    self.state = replicate(self.mesh, state)
    self.train_step = make_train_step(self.method, self.task, mc_loop=self.config.get("mc_loop", "vmap"))
    self.predict = make_predict(self.method, self.task)
    self.test_samples = int(self.config.get("test_samples", 0))
    self.predict_mc = (make_predict_mc(self.method, self.task, self.test_samples, batch_size=10)
                       if self.test_samples else None)
    self.schedule = (learning_rate_schedule(self.config, self.steps_per_epoch)
                     if "lr_schedule" in self.config else None)

  # ----------------------------------------------------------------- outputs
  def path(self, name: str) -> str:
    return os.path.join(self.options.out_dir, name)

  def _check_saved_config(self) -> None:
    """On resume: the config.json written when the run in ``out_dir`` started must hold
    this run's settings (checked before any checkpoint exists, e.g. after a kill in epoch 1)."""
    path = self.path("config.json")
    if not os.path.exists(path):
      return
    try:
      with open(path) as handle:
        saved = json.load(handle)
    except (OSError, ValueError) as error:
      raise _cannot_resume(path, f"is unreadable ({error!r})") from error
    if not isinstance(saved, dict):
      raise _cannot_resume(path, "holds no run config")
    check_metadata(saved, self.metadata(0), path)

  def metadata(self, epoch: int) -> dict:
    return {
        "experiment": self.experiment,
        "optimizer": self.options.optimizer,
        "config": {**self.config, "cl_prior": self.options.cl_prior if self.continual else None},
        "progress": {"epoch": epoch},
    }

  def log(self, message: str) -> None:
    print(message, flush=True)

  # -------------------------------------------------------------- evaluation
  def _task_inputs(self, task: int) -> Any:
    if not self.continual:
      return self.inputs
    permutation = self.permutations[task]
    return lambda x: self.inputs(data.permute_pixels(x, permutation))

  def evaluate_split(self, x: np.ndarray, y: np.ndarray, prefix: str, task: int, epoch: int) -> dict:
    """Mode metrics (and MC metrics when test_samples > 0) on one split."""
    inputs = self._task_inputs(task)
    size = int(self.config["eval_batch_size"])
    probs = predict_batches(self.predict, self.state, x, batch_size=size, inputs=inputs, mesh=self.mesh)
    if not np.all(np.isfinite(probs)):
      raise NonFiniteLossError(
          f"the network's {prefix} predictions are NaN or Inf after epoch {epoch + 1}: the weights "
          "diverged; lower the learning rate.")
    if self.task == "regression":
      result = {f"{prefix}_rmse": float(np.sqrt(np.mean((self._in_data_units(probs).reshape(-1) - y) ** 2)))}
    else:
      result = {f"{prefix}_{k}": v for k, v in classification_metrics(probs, y).items()}
    if self.predict_mc is not None:
      key = jax.random.fold_in(jax.random.PRNGKey(self.config["seed"] + 1), epoch)
      if self.task == "regression":
        outs = self._in_data_units(predict_batches(
            self.predict_mc, self.state, x, batch_size=size, inputs=inputs, mesh=self.mesh, key=key,
            sample_axis=1)[..., 0])
        metrics = regression_metrics(outs.mean(axis=0), outs.std(axis=0), y)
      else:
        mc = predict_batches(self.predict_mc, self.state, x, batch_size=size, inputs=inputs,
                             mesh=self.mesh, key=key)
        metrics = classification_metrics(mc, y)
      result.update({f"mc_{prefix}_{k}": v for k, v in metrics.items()})
    return result

  def _in_data_units(self, outputs: np.ndarray) -> np.ndarray:
    """Regression outputs mapped back from standardised to the targets' units."""
    return outputs * self.y_std + self.y_mean

  def evaluate_epoch(self, task: int, epoch: int) -> dict:
    ds = self.dataset
    if self.task == "regression":
      return self.evaluate_split(ds.x_train, ds.y_train, "train", task, epoch)
    result = {}
    if ds.has_validation:
      result.update(self.evaluate_split(ds.x_val, ds.y_val, "val", task, epoch))
    result.update(self.evaluate_split(ds.x_test, ds.y_test, "test", task, epoch))
    return result

  # ---------------------------------------------------------------- training
  def run(self) -> dict:
    """Trains (or resumes), evaluates every epoch, and writes every output."""
    options = self.options
    checkpointer = Checkpointer(self.path("checkpoints"))
    if options.resume and checkpointer.latest() is None and os.path.exists(self.path("summary.json")):
      raise RunError(
          f"--out {options.out_dir} holds a finished run (summary.json) but no checkpoint to resume "
          "from; choose another --out. Nothing was changed.")
    os.makedirs(options.out_dir, exist_ok=True)
    epochs = int(self.config["epochs"])
    total = epochs * self.num_tasks
    start, records = 0, []
    if options.resume and checkpointer.latest() is not None:
      self.state, meta = checkpointer.restore_latest(self.state, self.metadata(0))
      self.state = replicate(self.mesh, self.state)
      start = int(meta["progress"]["epoch"])
      records = _read_records(self.path("metrics.jsonl"), start)
      self.log(f"resuming {self.experiment} / {options.optimizer} after epoch {start} of {total}")
    else:
      write_json_atomic(self.path("config.json"), {
          "experiment": self.experiment, "optimizer": options.optimizer,
          "config": self.metadata(0)["config"], "data_file": options.data_file,
          "data_dir": options.data_dir, "devices": len(self.mesh.devices.flat),
          "version": bayesbinn_jax.__version__})
    _write_records(self.path("metrics.jsonl"), records)
    ds = self.dataset
    augment = data.augment_cifar if self.config.get("augment") else None
    for global_epoch in range(start, total):
      task, epoch = divmod(global_epoch, epochs)
      if self.use_prior and epoch == 0 and task > 0:
        self.state = self.state.replace(opt_state=_set_prior(self.state.opt_state))
      began = time.perf_counter()
      label = None if options.quiet else f"epoch {global_epoch + 1}/{total}"
      self.state, train = train_epoch(
          self.state, self.train_step, ds.x_train, self.train_targets, batch_size=self.batch_size,
          seed=self.config["seed"], epoch=global_epoch, inputs=self._task_inputs(task),
          mesh=self.mesh, augment=augment,
          max_nonfinite_steps=int(self.config["max_nonfinite_steps"]), progress=label)
      seconds = time.perf_counter() - began
      record = {"epoch": global_epoch + 1, "seconds": seconds,
                **{f"train_{k}": v for k, v in train.items()}}
      if self.schedule is not None:
        record["lr"] = float(self.schedule(global_epoch * self.steps_per_epoch))
      if self.continual:
        record["task"] = task + 1
      last_of_task = epoch == epochs - 1
      if (global_epoch + 1) % int(self.config["eval_every"]) == 0 or last_of_task:
        record.update(self.evaluate_epoch(task, global_epoch))
      if self.continual and last_of_task:
        # Earlier tasks are evaluated here; the current one already is, in this record.
        record["task_test_accuracies"] = [
            self.evaluate_split(ds.x_test, ds.y_test, "test", t, global_epoch)[self._cl_key()]
            for t in range(task)] + [record[self._cl_key()]]
      records.append(record)
      _write_records(self.path("metrics.jsonl"), records)
      if (global_epoch + 1) % int(self.config["checkpoint_every"]) == 0 or last_of_task:
        checkpointer.save(global_epoch + 1, self.state, self.metadata(global_epoch + 1))
      if not options.quiet or "test_accuracy" in record or "train_rmse" in record:
        self.log(_epoch_line(record))
    checkpointer.close()
    summary = self.summarize(records)
    self.figures(records, summary)
    write_json_atomic(self.path("summary.json"), summary)
    return summary

  def _cl_key(self) -> str:
    return "mc_test_accuracy" if self.predict_mc is not None else "test_accuracy"

  # ----------------------------------------------------------------- summary
  def summarize(self, records: list[dict]) -> dict:
    last = records[-1] if records else {}
    summary = {
        "experiment": self.experiment, "optimizer": self.options.optimizer,
        "epochs": int(self.config["epochs"]), "seed": int(self.config["seed"]),
        "train_seconds": float(sum(r["seconds"] for r in records)),
        "devices": len(self.mesh.devices.flat), "version": bayesbinn_jax.__version__,
    }
    summary.update({k: v for k, v in last.items() if k.startswith(("test_", "mc_test_", "train_", "mc_train_"))})
    if self.task == "classification" and any("val_accuracy" in r for r in records):
      best = max((r for r in records if "val_accuracy" in r), key=lambda r: r["val_accuracy"])
      summary.update(best_val_accuracy=best["val_accuracy"], best_val_epoch=best["epoch"],
                     test_accuracy_at_best_val=best["test_accuracy"])
      if "mc_test_accuracy" in best:
        summary["mc_test_accuracy_at_best_val"] = best["mc_test_accuracy"]
    if self.continual:
      rows = [r["task_test_accuracies"] for r in records if "task_test_accuracies" in r]
      summary["test_accuracy_matrix"] = rows
      summary["avg_test_accuracy_after_task"] = [float(np.mean(row)) for row in rows]
      summary["cl_prior"] = self.options.cl_prior
    return summary

  # ----------------------------------------------------------------- figures
  def figures(self, records: list[dict], summary: Mapping[str, Any]) -> None:
    if records:
      plots.plot_training_curves(self.path("training_curves.png"), records)
    if self.experiment == "two-moons":
      self._two_moons_figure()
    elif self.experiment == "snelson":
      self._snelson_figure()
    elif self.continual and records:
      plots.plot_continual(self.path("continual.png"),
                           {f"{self.options.optimizer} (prior: {self.options.cl_prior})":
                            summary["avg_test_accuracy_after_task"]})
    if self.task == "classification" and records:
      size = int(self.config["eval_batch_size"])
      probs = predict_batches(self.predict, self.state, self.dataset.x_test, batch_size=size,
                              inputs=self._task_inputs(self.num_tasks - 1), mesh=self.mesh)
      plots.plot_reliability(self.path("reliability.png"),
                             {self.options.optimizer: reliability_bins(probs, self.dataset.y_test)})

  def _two_moons_figure(self) -> None:
    gx, gy = np.meshgrid(np.linspace(-2.0, 3.0, 100), np.linspace(-1.5, 2.0, 100))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    size = int(self.config["eval_batch_size"])
    panels, arrays = {}, {"grid_x": gx, "grid_y": gy}
    mode = predict_batches(self.predict, self.state, grid, batch_size=size, inputs=self.inputs, mesh=self.mesh)
    name = self.options.optimizer if self.method.posterior is None else f"{self.options.optimizer} (mode)"
    panels[name] = (gx, gy, mode[:, 1].reshape(gx.shape))
    arrays["mode_prob"] = panels[name][2]
    if self.predict_mc is not None:
      mc = predict_batches(self.predict_mc, self.state, grid, batch_size=size, inputs=self.inputs,
                           mesh=self.mesh, key=jax.random.PRNGKey(self.config["seed"] + 2))
      panels[f"{self.options.optimizer} (mean, C={self.test_samples})"] = (gx, gy, mc[:, 1].reshape(gx.shape))
      arrays["mc_prob"] = mc[:, 1].reshape(gx.shape)
    np.savez_compressed(self.path("two_moons_grid.npz"), **arrays)
    plots.plot_two_moons(self.path("two_moons.png"), self.dataset.x_train, self.dataset.y_train, panels)

  def _snelson_figure(self) -> None:
    ds, size = self.dataset, int(self.config["eval_batch_size"])
    mode = self._in_data_units(predict_batches(
        self.predict, self.state, ds.x_test, batch_size=size, inputs=self.inputs, mesh=self.mesh).reshape(-1))
    curves = {f"{self.options.optimizer} (mode)": (mode, np.zeros_like(mode))}
    arrays = {"x_test": ds.x_test.reshape(-1), "mode_mean": mode}
    if self.predict_mc is not None:
      outs = self._in_data_units(predict_batches(
          self.predict_mc, self.state, ds.x_test, batch_size=size, inputs=self.inputs, mesh=self.mesh,
          key=jax.random.PRNGKey(self.config["seed"] + 2), sample_axis=1)[..., 0])
      curves[f"{self.options.optimizer} (MC, C={self.test_samples})"] = (outs.mean(0), outs.std(0))
      arrays.update(mc_mean=outs.mean(0), mc_std=outs.std(0))
    np.savez_compressed(self.path("snelson_predictions.npz"), **arrays)
    plots.plot_snelson(self.path("snelson.png"), ds.x_train.reshape(-1), ds.y_train,
                       ds.x_test.reshape(-1), curves)


def _set_prior(opt_state: Any) -> Any:
  """The optimizer state with the prior set to the current posterior (a new task)."""

  def replace(node: Any) -> Any:
    if isinstance(node, BayesBiNNState):
      return node._replace(prior_lam=posterior_as_prior(node.lam))
    return node

  return jax.tree.map(replace, opt_state, is_leaf=lambda n: isinstance(n, BayesBiNNState))


def _epoch_line(record: Mapping[str, Any]) -> str:
  keys = ("train_loss", "train_accuracy", "val_accuracy", "test_accuracy", "mc_test_accuracy",
          "train_rmse", "mc_train_rmse", "mc_train_nll")
  parts = [f"{k}={record[k]:.4f}" for k in keys if k in record]
  return f"epoch {record['epoch']} ({record['seconds']:.1f}s): " + " ".join(parts)


def run_experiment(options: RunOptions) -> dict:
  """Builds and runs :class:`Experiment`; returns its summary."""
  return Experiment(options).run()
