"""A run's typed config: the run settings, the optimizer's hyperparameters, the seed.

:class:`RunConfig` is built in one place, :func:`build_config`: the spec's
preset (:func:`bayesbinn_jax.experiments.presets.preset`), then ``--epochs``
and the ``--set key=value`` overrides, each parsed to its field's type; the
frozen dataclasses check every value once, when built
(:class:`~bayesbinn_jax.train.hyperparams.ConfigError`: one line naming the
key, the value and the accepted range). The run settings are
:class:`RunSettings`; the optimizer's hyperparameters one of the classes of
:mod:`bayesbinn_jax.train.hyperparams`, which ``build_method`` takes.

A run writes its config to ``OUT/config.json`` as a flat mapping
(:meth:`RunConfig.as_dict`) with :data:`SCHEMA_VERSION`. :func:`read_saved_run`
reads it back (once), migrating a file of an earlier release where the meaning
of every setting is unchanged (:func:`migrate`), and refusing it otherwise in one
line naming the release that wrote it (:class:`SavedRunError`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap
from typing import Any, Mapping, Sequence

from bayesbinn_jax.experiments.presets import RENAMED_KEYS, preset
from bayesbinn_jax.nn.activations import BINARY_INPUT_QUANTIZERS
from bayesbinn_jax.nn.networks import ACTIVATIONS
from bayesbinn_jax.optim.temperature import TRAIN_SET_SIZE, apply_recipe
from bayesbinn_jax.train.hyperparams import (FRACTION, HYPERPARAMS, NON_NEGATIVE, OPTIMIZERS, POSITIVE,  # noqa: F401
                                             ConfigError, Hyper, OneOf, Settings, field_types, fields_help,
                                             hyper_class, keys_where, setting)
from bayesbinn_jax.train.methods import OUTPUT_SCALES, Method, build_method

SCHEMA_VERSION = 1
"""The layout of config.json's settings. Files without ``schema_version`` (releases up to
0.2.0) are migrated by :func:`migrate`."""
PARAM_DTYPES = ("float32", "bfloat16", "float16")
SEED_LIMIT = 2**32


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunSettings(Settings):
  """The experiment's settings: data, network, evaluation, checkpoints, the engine."""

  epochs: int = setting(doc="epochs (per task for permuted-mnist)", check=POSITIVE)
  batch_size: int = setting(doc="training examples per step", check=POSITIVE)
  eval_batch_size: int = setting(doc="examples predicted at once", check=POSITIVE, evaluation=True)
  val_fraction: float = setting(0.0, doc="held-out validation part of the training set", check=FRACTION)
  augment: bool = setting(False, doc="random crops and flips of the training images")
  train_subset: int = setting(0, doc="first N training examples, 0 = all", check=NON_NEGATIVE)
  eval_every: int = setting(1, doc="epochs between evaluations", check=POSITIVE)
  checkpoint_every: int = setting(1, doc="epochs between checkpoints", check=POSITIVE, resumable=True)
  activations: str = setting(
      "real", doc="binary: binary inputs into every binary layer but the first", check=OneOf(ACTIVATIONS))
  activation_quantizer: str = setting(
      "ste_sign", doc="the binary activations' quantizer", check=OneOf(BINARY_INPUT_QUANTIZERS))
  param_dtype: str = setting(
      "float32", doc="params and compute; lambda, BatchNorm and the loss stay float32",
      check=OneOf(PARAM_DTYPES))
  output_scale: str = setting(
      "none", doc="learned: a gain per output on the last BatchNorm, trained by Adam beside the "
      "binary optimizer", check=OneOf(OUTPUT_SCALES))
  output_scale_lr: float = setting(1e-2, doc="the gain's Adam learning rate", check=POSITIVE)
  max_nonfinite_steps: int = setting(
      20, doc="stop after that many consecutive NaN/Inf steps, each skipped; 0 = never",
      check=NON_NEGATIVE, resumable=True)
  num_tasks: int | None = setting(None, doc="continual-learning tasks (permuted-mnist only)", check=POSITIVE)


@dataclasses.dataclass(frozen=True)
class RunConfig:
  """Everything a run's training depends on: the experiment, the optimizer, the seed,
  the run settings (:attr:`run`) and the optimizer's hyperparameters (:attr:`hyper`)."""

  experiment: str
  optimizer: str
  seed: int
  run: RunSettings
  hyper: Hyper

  def __post_init__(self) -> None:
    if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < SEED_LIMIT:
      raise ConfigError("seed", self.seed, "in [0, 2**32)")
    if type(self.hyper) is not hyper_class(self.optimizer):
      raise ConfigError("hyper", type(self.hyper).__name__, f"{hyper_class(self.optimizer).__name__}")

  @property
  def test_samples(self) -> int:
    """C, the Monte Carlo networks at evaluation (0: the mode network only)."""
    return getattr(self.hyper, "test_samples", 0)

  @property
  def mc_loop(self) -> str:
    return getattr(self.hyper, "mc_loop", "vmap")

  @property
  def num_tasks(self) -> int:
    return self.run.num_tasks or 1

  def as_dict(self) -> dict[str, Any]:
    """The flat ``key: value`` mapping of config.json (unset settings left out) and the seed."""
    run = {k: v for k, v in self.run.as_dict().items() if v is not None}
    return {**run, **self.hyper.as_dict(), "seed": self.seed}

  def replace(self, **changes: Any) -> RunConfig:
    """This config with ``changes`` (flat keys, typed values), checked again."""
    return from_mapping(self.experiment, self.optimizer, {**self.as_dict(), **changes})


def method_of(config: RunConfig, *, steps_per_epoch: int, train_set_size: int, key: Any,
              prior_lambda: Any = None) -> Method:
  """:func:`~bayesbinn_jax.train.methods.build_method` with the run's hyperparameters,
  epochs and output scale."""
  return build_method(config.hyper, epochs=config.run.epochs, steps_per_epoch=steps_per_epoch,
                      train_set_size=train_set_size, key=key, prior_lambda=prior_lambda,
                      output_scale=config.run.output_scale, output_scale_lr=config.run.output_scale_lr)


class UnknownKeyError(ValueError):
  """A ``key`` that is no setting of the run settings nor of ``optimizer``'s hyperparameters."""

  def __init__(self, key: str, optimizer: str):
    super().__init__(f"{key} is no setting of a run with {optimizer}.")
    self.key, self.optimizer = key, optimizer


def from_mapping(experiment: str, optimizer: str, values: Mapping[str, Any]) -> RunConfig:
  """A :class:`RunConfig` from a flat mapping (a preset with changes, or a saved config).

  Raises:
    UnknownKeyError: a key that is no setting.
    ConfigError: a value of the wrong type or out of range.
  """
  hyper_cls = hyper_class(optimizer)
  run_keys = {f.name for f in dataclasses.fields(RunSettings)}
  hyper_keys = {f.name for f in dataclasses.fields(hyper_cls)}
  unknown = sorted(set(values) - run_keys - hyper_keys - {"seed"})
  if unknown:
    raise UnknownKeyError(unknown[0], optimizer)
  run = RunSettings(**{k: v for k, v in values.items() if k in run_keys})
  hyper = hyper_cls(**{k: v for k, v in values.items() if k in hyper_keys})
  return RunConfig(experiment, optimizer, values.get("seed", 0), run, hyper)


def build_config(experiment: str, optimizer: str, *, seed: int = 0, epochs: int | None = None,
                 overrides: Sequence[str] = ()) -> RunConfig:
  """The config of a run: ``experiment``'s preset for ``optimizer``, then ``epochs`` and each
  ``key=value`` of ``overrides`` (parsed to the key's type), checked once.

  Raises:
    ConfigError: a malformed override, an unknown or renamed key, a value of the wrong
      type or out of range (one line each).
  """
  values = from_mapping(experiment, optimizer, {**preset(experiment, optimizer), "seed": seed}).as_dict()
  if epochs is not None:
    values["epochs"] = epochs
  values = apply_overrides(experiment, optimizer, values, overrides)
  if experiment == "mnist" and optimizer == "bayesbinn":
    # Issue 30: a temperature set alone takes the recipe's train_set_scale (docs/temperature.md).
    subset = values["train_subset"]
    values = apply_recipe(values, [item.partition("=")[0].strip() for item in overrides],
                          round(subset * (1 - values["val_fraction"])) if subset else TRAIN_SET_SIZE)
  return from_mapping(experiment, optimizer, values)


def apply_overrides(experiment: str, optimizer: str, values: Mapping[str, Any],
                    overrides: Sequence[str]) -> dict[str, Any]:
  """``values`` with each ``key=value`` of ``overrides`` parsed to its field's type."""
  types = {**field_types(RunSettings), **field_types(hyper_class(optimizer))}  # type: ignore[arg-type]
  result = dict(values)
  settable = sorted(k for k in result if k != "seed")
  for item in overrides:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
      raise OverrideError(item, f"--set takes key=value; got {item!r}.")
    if key in RENAMED_KEYS and key not in result:
      raise OverrideError(item, f"--set {key}: renamed; use --set {RENAMED_KEYS[key]}={text}.")
    if key not in settable:
      raise OverrideError(item, f"--set {key}: unknown key for this experiment and optimizer; "
                          f"known keys: {', '.join(settable)}.")
    result[key] = _parse(key, text, types[key], result[key])
  return result


class OverrideError(ValueError):
  """A ``--set`` item (``item``) that is malformed, names no setting, or cannot be parsed."""

  def __init__(self, item: str, message: str):
    super().__init__(message)
    self.item = item


def _parse(key: str, text: str, kind: Any, default: Any) -> Any:
  """``text`` parsed to ``kind``; the dataclass then checks its range."""
  try:
    if kind is bool:
      lowered = text.strip().lower()
      if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError
      return lowered in ("true", "1", "yes")
    if kind is int or kind == (int | None):
      return int(text)
    if kind is float:
      return float(text)
    if kind is str:
      return str(text)
    value = json.loads(text) if text.strip().startswith("[") else [
        float(v) if "." in v or "e" in v.lower() else int(v) for v in text.split(",") if v.strip()]
    if not isinstance(value, list):
      raise ValueError
    return value
  except ValueError:
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    name = names.get(kind) or ("an integer" if kind == (int | None) else
                               "numbers separated by commas, or a JSON list")
    raise OverrideError(f"{key}={text}", f"--set {key}={text!r}: expected {name} (default {default!r}).") from None


def _keys_where(flag: str) -> tuple[str, ...]:
  return tuple(dict.fromkeys(k for cls in (*HYPERPARAMS.values(), RunSettings) for k in keys_where(cls, flag)))


def evaluation_keys() -> tuple[str, ...]:
  """The settings an evaluation of a saved run may change: how many networks the MC
  predictive averages and how many examples are predicted at once."""
  return _keys_where("evaluation")


def resumable_keys() -> tuple[str, ...]:
  """The settings a resumed run may change: they never change the trained state."""
  return _keys_where("resumable")


class EvaluationChangeError(ValueError):
  """An evaluation of a saved run that changes settings (``changed``) other than
  :func:`evaluation_keys`."""

  def __init__(self, changed: Sequence[str]):
    super().__init__(f"an evaluation may change only {', '.join(evaluation_keys())}; "
                     f"got {', '.join(changed)}.")
    self.changed = tuple(changed)


def check_evaluation(trained: RunConfig, evaluated: RunConfig) -> None:
  """Raises :class:`EvaluationChangeError` unless ``evaluated`` differs from ``trained``
  (a saved run's config) in :func:`evaluation_keys` only."""
  before, after = trained.as_dict(), evaluated.as_dict()
  changed = [key for key in ("experiment", "optimizer") if getattr(trained, key) != getattr(evaluated, key)]
  changed += sorted(k for k in set(before) | set(after)
                    if k not in evaluation_keys() and before.get(k) != after.get(k))
  if changed:
    raise EvaluationChangeError(changed)


def evaluation_config(trained: RunConfig, overrides: Sequence[str]) -> RunConfig:
  """The config of an evaluation of a run trained with ``trained``, with ``overrides``
  (``key=value``), which may change only :func:`evaluation_keys` (:func:`check_evaluation`).

  Raises:
    OverrideError: a malformed override, or one that changes the trained run.
    ConfigError: a value of the wrong type or out of range.
  """
  values = apply_overrides(trained.experiment, trained.optimizer, trained.as_dict(), overrides)
  evaluated = from_mapping(trained.experiment, trained.optimizer, values)
  try:
    check_evaluation(trained, evaluated)
  except EvaluationChangeError as error:
    item = next(i for i in overrides if i.partition("=")[0].strip() in error.changed)
    raise OverrideError(item, f"--evaluate: --set {item} changes the trained run; only "
                        f"{', '.join(evaluation_keys())} may be set.") from None
  return evaluated


def help_text() -> str:
  """The ``--help`` list of ``--set`` keys, generated from the dataclasses' fields: which
  optimizer has which, then each key's type or choices, default and doc once."""
  classes: dict[str, type] = {"every run": RunSettings, **HYPERPARAMS}
  lines = [textwrap.fill(f"{name}: {', '.join(f.name for f in dataclasses.fields(cls))}", 88,
                         initial_indent="  ", subsequent_indent="      ") for name, cls in classes.items()]
  described: dict[str, list[str]] = {}
  for cls in classes.values():
    for field, line in zip(dataclasses.fields(cls), fields_help(cls, defaults=cls is not RunSettings)):
      described.setdefault(field.name, []).append(line)
  for variants in described.values():
    line = variants[0]
    if len(set(variants)) > 1:  # a default that differs between optimizers (lr_decay) is left out
      head, _, doc = line.partition("): ")
      line = f"{head.split(', default ')[0]}): {doc}"
    lines.append(textwrap.fill(line, 88, initial_indent="    ", subsequent_indent="        "))
  return "\n".join(lines)


# ----------------------------------------------------------------------------- saved runs
class SavedRunError(ValueError):
  """A run's config.json that cannot be read, or was written by a release whose settings
  this one cannot take over: ``path``, ``problem`` and ``release`` (None: this one)."""

  def __init__(self, path: str, problem: str, release: str | None = None):
    self.path, self.problem, self.release = path, problem, release
    by = f" (written by bayesbinn_jax {release})" if release else ""
    super().__init__(f"{path}{by} {problem}.")


@dataclasses.dataclass(frozen=True)
class SavedRun:
  """A run's config.json, migrated to :data:`SCHEMA_VERSION`: its :class:`RunConfig`, the
  continual prior, the data it trained on, and the release that wrote it."""

  path: str
  config: RunConfig
  cl_prior: str | None
  data_file: str | None
  data_dir: str | None
  release: str
  raw: Mapping[str, Any]


MIGRATED_DEFAULTS = {"activations": "real", "activation_quantizer": "ste_sign", "param_dtype": "float32",
                     "output_scale": "none", "output_scale_lr": 1e-2, "max_nonfinite_steps": 20,
                     "mc_loop": "vmap"}
"""Settings added in releases up to 0.2.0, with the value a run written before them had:
the networks' real activations (``activation_quantizer`` None or absent: that of a network
with real activations, never used), float32, the gainless output BatchNorm, Adam's
default learning rate for the gain (unused), the stop after 20 non-finite steps, and
the vmapped Monte Carlo loop."""


def migrate(saved: Mapping[str, Any], where: str) -> dict[str, Any]:
  """``saved`` (config.json or a checkpoint's metadata) in the layout of :data:`SCHEMA_VERSION`.

  A file without ``schema_version`` was written by release 0.1.0 or 0.2.0. Its config is
  migrated where every setting keeps its meaning: ``rng`` is now ``generator``; a setting
  added since (:data:`MIGRATED_DEFAULTS`) missing or None reads as the value those runs had.
  Anything else (a BayesBiNN run from before the noise ``generator`` existed, an unknown
  key) is refused.

  Raises:
    SavedRunError: a newer schema, or a setting whose meaning cannot be carried over.
  """
  release = str(saved.get("version", "before 0.1.0"))
  schema = saved.get("schema_version", 0)
  if schema == SCHEMA_VERSION:
    return dict(saved)
  if not isinstance(schema, int) or schema > SCHEMA_VERSION:
    raise SavedRunError(where, f"has schema_version {schema!r}, newer than this release's "
                        f"({SCHEMA_VERSION}); read it with that release or a newer one", release)
  config = saved.get("config")
  if not isinstance(config, Mapping):
    raise SavedRunError(where, "holds no run config", release)
  config = dict(config)
  for old, new in RENAMED_KEYS.items():
    if old in config and new not in config:
      config[new] = config.pop(old)
  optimizer = saved.get("optimizer")
  if optimizer == "bayesbinn" and "generator" not in config:
    raise SavedRunError(where, "trained BayesBiNN with noise drawn before the generator setting "
                        "existed, which this release cannot reproduce; use that release", release)
  if optimizer in HYPERPARAMS:
    known = {f.name for f in dataclasses.fields(RunSettings)} | {f.name for f in dataclasses.fields(
        hyper_class(optimizer))} | {"seed", "cl_prior"}
    for key, value in MIGRATED_DEFAULTS.items():
      if key in known and config.get(key) is None:
        config[key] = value
    unknown = sorted(set(config) - known)
    if unknown:
      raise SavedRunError(where, f"has settings this release does not know ({', '.join(unknown)}); "
                          "use that release", release)
  return {**saved, "config": config, "schema_version": SCHEMA_VERSION}


def read_saved_run(out_dir: str) -> SavedRun:
  """``out_dir/config.json``, migrated (:func:`migrate`) and checked.

  Raises:
    SavedRunError: no config.json, an unreadable one, or one that cannot be migrated.
  """
  path = os.path.join(out_dir, "config.json")
  try:
    with open(path) as handle:
      saved = json.load(handle)
  except FileNotFoundError:
    if not os.path.isdir(out_dir):
      raise SavedRunError(out_dir, "does not exist: pass the output directory of a run") from None
    raise SavedRunError(out_dir, "holds no config.json: pass the output directory of a run") from None
  except (OSError, ValueError) as error:
    raise SavedRunError(path, f"is unreadable ({error!r})") from error
  if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
    raise SavedRunError(path, "holds no run config")
  release = str(saved.get("version", "before 0.1.0"))
  migrated = migrate(saved, path)
  values = {k: v for k, v in migrated["config"].items() if k != "cl_prior"}
  try:
    config = from_mapping(str(saved.get("experiment")), str(saved.get("optimizer")), values)
  except ValueError as error:
    raise SavedRunError(path, f"holds a config this release refuses: {error}".rstrip("."),
                        release if "schema_version" not in saved else None) from error
  return SavedRun(path, config, migrated["config"].get("cl_prior"), saved.get("data_file"),
                  saved.get("data_dir"), release, migrated)
