"""What a run and an evaluation build before touching a checkpoint.

    options -> data (:class:`RunData`) -> method, steps, state (:class:`Training`) -> :class:`Evaluator`

:func:`prepare` does it all and writes nothing; :mod:`~bayesbinn_jax.experiments.pipeline`
then restores or trains, and :mod:`~bayesbinn_jax.experiments.report` measures through the
:class:`Evaluator`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from bayesbinn_jax import data
from bayesbinn_jax.experiments.config import RunConfig, method_of
from bayesbinn_jax.experiments.options import RunError, RunOptions
from bayesbinn_jax.experiments.specs import DataSource, ExperimentSpec, Preprocessing, preprocessing
from bayesbinn_jax.optim.bayesbinn import BayesBiNNState
from bayesbinn_jax.optim.posterior import posterior_as_prior
from bayesbinn_jax.train.engine import TrainState, create_train_state, make_predict, make_predict_mc, make_train_step
from bayesbinn_jax.train.keys import purpose_key
from bayesbinn_jax.train.loop import NonFiniteLossError, predict_batches
from bayesbinn_jax.train.methods import Method
from bayesbinn_jax.train.metrics import classification_metrics, regression_metrics
from bayesbinn_jax.train.sharding import check_batch_size, data_mesh, pin_layout, place, replicate, shard_state

MC_EVAL_CHUNK = 10
"""Monte Carlo networks evaluated at once (``jax.lax.map`` batch): bounds evaluation memory."""


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass(frozen=True)
class RunData:
  """The checked data of a run and how they become network inputs.

  ``permutations`` holds one pixel permutation per continual-learning task
  (None otherwise); :meth:`inputs` gives task ``t``'s input function.
  ``notes`` say how the data were fitted to the network (channels-first images
  transposed), values out of the ordinary for the normalisation
  (:func:`bayesbinn_jax.data.check_value_range`) and test labels the training
  split lacks, when allowed (:func:`bayesbinn_jax.data.check_unseen_labels`).
  """

  dataset: Any  # data.ArrayDataset or data.RegressionDataset (by the spec's task)
  preprocessing: Preprocessing
  num_outputs: int
  permutations: np.ndarray | None
  notes: tuple[str, ...] = ()

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
    if isinstance(ds, data.ImageFolderDataset):  # --data-dir of class folders: names and source
      described.update(classes=list(ds.classes), image_folder=dict(ds.origin or {}))
    return described


def load_data(spec: ExperimentSpec, config: RunConfig, source: DataSource) -> RunData:
  """Loads and checks the data of ``spec``, then applies ``train_subset`` and ``val_fraction``.

  ``train_subset > 0`` keeps the first that many training examples;
  ``val_fraction > 0`` holds out a seeded validation part. The values are then
  checked against ``spec.normalisation`` (DataError, or notes).
  """
  dataset: Any = spec.load(source)  # data.ArrayDataset or data.RegressionDataset
  note = None
  where = source.data_file or source.data_dir or f"tfds:{spec.name}"
  if spec.image_shape is not None:
    dataset, note = data.fit_input_shape(dataset, spec.image_shape, where)
  run = config.run
  if run.train_subset:
    count = min(run.train_subset, dataset.num_train)
    dataset = dataclasses.replace(dataset, x_train=dataset.x_train[:count], y_train=dataset.y_train[:count])
  if run.val_fraction > 0:
    if dataset.num_train < 2:
      raise RunError(
          f"val_fraction={run.val_fraction} needs at least 2 training examples to split; the "
          f"training set has {dataset.num_train} (train_subset={run.train_subset}).")
    dataset = data.split_validation(dataset, run.val_fraction, config.seed)
  permutations = None
  if spec.continual:
    pixels = int(np.prod(dataset.input_shape))
    permutations = data.task_permutations(config.num_tasks, pixels, purpose_key(config.seed, "permutations"))
  notes = [note, *data.check_value_range(dataset, spec.normalisation, where)]
  if source.allow_unseen_labels and isinstance(dataset, data.ArrayDataset):
    notes.append(data.check_unseen_labels(dataset, where, allow=True))
  num_outputs = dataset.num_classes if spec.task == "classification" else 1
  return RunData(dataset, preprocessing(spec, dataset), num_outputs, permutations,
                 tuple(n for n in notes if n))


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
  batch_size = config.run.batch_size
  if batch_size > dataset.num_train:
    raise RunError(
        f"batch_size={batch_size} is larger than the {dataset.num_train} training examples "
        f"(after train_subset and val_fraction); pass --set batch_size={dataset.num_train} or less.")
  mesh = data_mesh()
  check_batch_size(mesh, batch_size)
  check_batch_size(mesh, config.run.eval_batch_size, "eval_batch_size")
  steps_per_epoch = dataset.num_train // batch_size
  method = method_of(config, steps_per_epoch=steps_per_epoch, train_set_size=dataset.num_train,
                     key=purpose_key(config.seed, "optimizer"))
  model = spec.network(config.run, method.quantizer, run_data.num_outputs)
  sample_input: Any = run_data.inputs()(dataset.x_train[:1])
  state = create_train_state(model, method, sample_input, config.seed)
  if uses_posterior_prior(spec, options):
    # The prior of the first task is zero; from the second on it is the last posterior.
    state = state.replace(opt_state=set_prior(state.opt_state, zero=True))
  train_step = make_train_step(method, spec.task, mc_loop=config.mc_loop)
  layout: Any = None
  left_whole: list[Any] = []
  if options.shard_state:
    state, layout, left_whole = shard_state(mesh, state, num_samples=method.num_samples)
    train_step = pin_layout(train_step, mesh, layout)
  else:
    state = replicate(mesh, state)
  test_samples = config.test_samples
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


def uses_posterior_prior(spec: ExperimentSpec, options: RunOptions) -> bool:
  return spec.continual and options.optimizer == "bayesbinn" and options.cl_prior == "posterior"


def set_prior(opt_state: Any, *, zero: bool = False) -> Any:
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
    assert predict is not None  # predict_mc exists where a key is given
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


@dataclasses.dataclass(frozen=True)
class Prepared:
  """What a run and an evaluation build before touching a checkpoint: the checked data and
  OOD images, the method and compiled steps, the initial train state and the evaluator."""

  spec: ExperimentSpec
  run_data: RunData
  ood_images: np.ndarray | None
  training: Training
  state: TrainState
  evaluator: Evaluator


def prepare(spec: ExperimentSpec, options: RunOptions) -> Prepared:
  """Loads and checks the data and the OOD file, builds the method, the network, the train
  state and the steps (nothing is written)."""
  config = options.config
  run_data = load_data(spec, config, DataSource(options.data_file, options.data_dir, options.allow_unseen_labels,
                                               config.seed))
  ood_images = _load_ood_images(spec, options, run_data)
  training, state = build_training(spec, options, run_data)
  evaluator = Evaluator(spec, training, run_data, config.run.eval_batch_size, config.seed)
  return Prepared(spec, run_data, ood_images, training, state, evaluator)
