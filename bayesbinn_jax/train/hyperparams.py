"""Each optimizer's hyperparameters as a frozen, validated dataclass.

:func:`bayesbinn_jax.train.methods.build_method` takes one of
:class:`BayesBiNNHyper`, :class:`SteHyper`, :class:`AdamHyper`,
:class:`BopHyper`, :class:`PMFHyper`; the class names the optimizer
(:data:`HYPERPARAMS`). Every field is declared with :func:`setting`: its type
(the annotation), its documentation and its accepted range. An instance is
checked once, when it is built (:class:`Settings`): a value of the wrong type or
out of range raises :class:`ConfigError`, one line naming the key, the value and
the accepted range. ``experiments/config.py`` declares the run's own settings
the same way and builds both from an experiment's preset.

Example::

  >>> BayesBiNNHyper(lr=1e-3, temperature=1.0).train_samples
  1
  >>> BayesBiNNHyper(lr=-1.0)
  Traceback (most recent call last):
  ...
  bayesbinn_jax.train.hyperparams.ConfigError: lr must be > 0; got -1.0.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from typing import Any, ClassVar, Sequence

from bayesbinn_jax.nn.monte_carlo import LOOPS
from bayesbinn_jax.optim.noise import GENERATORS
from bayesbinn_jax.train.schedules import SCHEDULES

INT_LIMIT = 2**31
"""Integer settings stay below this in magnitude: step counters and schedules compute in int32."""


class ConfigError(ValueError):
  """A setting of the wrong type or out of range: ``key``, ``value`` and ``accepted``
  (the accepted range or type, in words) say which."""

  def __init__(self, key: str, value: Any, accepted: str):
    self.key, self.value, self.accepted = key, value, accepted
    super().__init__(f"{key} must be {accepted}; got {value!r}.")


# ----------------------------------------------------------------------------- ranges
@dataclasses.dataclass(frozen=True)
class Range:
  """``low < value`` (or ``<=`` when ``low_inclusive``) and ``value < high``; None is open."""

  low: float | None = None
  high: float | None = None
  low_inclusive: bool = True

  def accepts(self, value: Any) -> bool:
    if self.low is not None and not (value >= self.low if self.low_inclusive else value > self.low):
      return False
    return self.high is None or value < self.high

  def __str__(self) -> str:
    if self.high is None:
      return f"{'>=' if self.low_inclusive else '>'} {self.low:g}"
    return f"in {'[' if self.low_inclusive else '('}{self.low:g}, {self.high:g})"


POSITIVE = Range(0, low_inclusive=False)
NON_NEGATIVE = Range(0)
FRACTION = Range(0, 1)
"""[0, 1)."""


@dataclasses.dataclass(frozen=True)
class OneOf:
  choices: tuple[str, ...]

  def accepts(self, value: Any) -> bool:
    return value in self.choices

  def __str__(self) -> str:
    return f"one of {', '.join(self.choices)}"


def setting(default: Any = dataclasses.MISSING, *, doc: str, check: Range | OneOf | None = None,
            resumable: bool = False, evaluation: bool = False) -> Any:
  """A dataclass field of a :class:`Settings` class.

  Args:
    default: the value when none is given (none: every preset gives one).
    doc: what the setting does, in a few words (the CLI's help lists it).
    check: the accepted range or choices (the type comes from the annotation).
    resumable: the setting never changes the trained state (how a run is watched,
      saved, evaluated or looped over its samples): a resumed run may change it.
    evaluation: an evaluation of a saved run may change it.
  """
  metadata = {"doc": doc, "check": check, "resumable": resumable or evaluation, "evaluation": evaluation}
  return dataclasses.field(default=default, metadata=metadata)


# ----------------------------------------------------------------------------- the base class
def _is_finite_number(value: Any) -> bool:
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and not (isinstance(value, float) and not math.isfinite(value)))


def _is_integer(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
  """``{name: type}`` of a :class:`Settings` class's fields (its resolved annotations)."""
  hints = typing.get_type_hints(cls)
  return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def check_type(key: str, value: Any, kind: Any) -> Any:
  """``value`` checked against the annotation ``kind`` (int, float, bool, str, ``int | None``,
  ``tuple[int, ...]``); returns it normalised (a list as a tuple). Raises :class:`ConfigError`."""
  if typing.get_origin(kind) in (typing.Union, types.UnionType):
    if value is None:
      return None
    kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
  if kind is bool:
    if not isinstance(value, bool):
      raise ConfigError(key, value, "true or false")
  elif kind is int:
    if not _is_integer(value):
      raise ConfigError(key, value, "an integer")
    if not -INT_LIMIT < value < INT_LIMIT:
      raise ConfigError(key, value, "below 2**31 in magnitude")
  elif kind is float:
    if not _is_finite_number(value):
      raise ConfigError(key, value, "a finite number")
  elif kind is str:
    if not isinstance(value, str):
      raise ConfigError(key, value, "a string")
  elif typing.get_origin(kind) is tuple:
    if not isinstance(value, (list, tuple)) or not all(
        _is_integer(v) and 0 <= v < INT_LIMIT for v in value):
      raise ConfigError(key, list(value) if isinstance(value, tuple) else value,
                        "epoch numbers (integers >= 0)")
    return tuple(value)
  return value


class Settings:
  """Base of the settings dataclasses: every field is checked when an instance is built."""

  def __post_init__(self) -> None:
    types = field_types(type(self))  # type: ignore[arg-type]
    for field in dataclasses.fields(self):  # type: ignore[arg-type]
      value = check_type(field.name, getattr(self, field.name), types[field.name])
      object.__setattr__(self, field.name, value)
      check = field.metadata.get("check")
      if value is not None and check is not None and not check.accepts(value):
        raise ConfigError(field.name, value, str(check))

  def as_dict(self) -> dict[str, Any]:
    """The fields as JSON-ready values (tuples as lists)."""
    return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v
            for f in dataclasses.fields(self)}  # type: ignore[arg-type]


def keys_where(cls: type, flag: str) -> tuple[str, ...]:
  """The names of ``cls``'s fields whose :func:`setting` ``flag`` is set."""
  return tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get(flag))


# ----------------------------------------------------------------------------- the optimizers
_LR_DECAY_DOC = "factor of the learning rate at each milestone of steps (pmf: every lr_decay_steps)"

@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleHyper(Settings):
  """A learning rate with a per-epoch schedule (:func:`bayesbinn_jax.train.schedules.epoch_schedule`)."""

  name: ClassVar[str] = ""
  lr: float = setting(doc="learning rate", check=POSITIVE)
  lr_schedule: str = setting("cosine", doc="the learning rate's per-epoch schedule", check=OneOf(SCHEDULES))
  lr_end: float = setting(1e-16, doc="last learning rate of cosine and geometric", check=POSITIVE)
  lr_milestones: tuple[int, ...] = setting((), doc="epochs where steps multiplies it by lr_decay")
  lr_decay: float = setting(0.1, doc=_LR_DECAY_DOC, check=POSITIVE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BayesBiNNHyper(ScheduleHyper):
  """BayesBiNN (:func:`bayesbinn_jax.optim.bayesbinn`) and its Monte Carlo evaluation."""

  name: ClassVar[str] = "bayesbinn"
  temperature: float = setting(
      1e-10, doc="tau of the relaxed samples; on mnist, set alone it also sets train_set_scale to "
      "ceil(tau / 7.2e-8), the recipe of optim/temperature.py (docs/temperature.md)", check=POSITIVE)
  momentum: float = setting(0.0, doc="beta of lambda's momentum", check=FRACTION)
  train_samples: int = setting(1, doc="K, samples per step", check=POSITIVE)
  test_samples: int = setting(
      0, doc="C, MC networks at evaluation; 0 = mode only", check=NON_NEGATIVE, evaluation=True)
  lambda_init: float = setting(10.0, doc="scale of the initial lambda", check=POSITIVE)
  lambda_init_std: float = setting(0.0, doc="spread of the initial lambda", check=NON_NEGATIVE)
  kl_weight: float = setting(1.0, doc="weight of the prior's KL term", check=NON_NEGATIVE)
  train_set_scale: int = setting(1, doc="multiplies the training set size N", check=POSITIVE)
  generator: str = setting("counter", doc="uniform noise; was rng", check=OneOf(GENERATORS))
  mc_loop: str = setting("vmap", doc="how the K samples' passes run; unroll for the CIFAR VGG on CPU",
                         check=OneOf(LOOPS), resumable=True)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SteHyper(ScheduleHyper):
  """STE with Adam (:func:`bayesbinn_jax.optim.ste_adam`)."""

  name: ClassVar[str] = "ste"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AdamHyper(ScheduleHyper):
  """Full-precision Adam (``optax.adam``)."""

  name: ClassVar[str] = "adam"


@dataclasses.dataclass(frozen=True, kw_only=True)
class BopHyper(Settings):
  """Bop (:func:`bayesbinn_jax.optim.bop`) with gamma decayed every few epochs."""

  name: ClassVar[str] = "bop"
  threshold: float = setting(doc="flip threshold tau", check=NON_NEGATIVE)
  gamma: float = setting(doc="adaptivity rate", check=POSITIVE)
  gamma_decay: float = setting(1.0, doc="factor of gamma every gamma_decay_every epochs", check=POSITIVE)
  gamma_decay_every: int = setting(1, doc="epochs between gamma decays", check=POSITIVE)


@dataclasses.dataclass(frozen=True, kw_only=True)
class PMFHyper(Settings):
  """PMF (:func:`bayesbinn_jax.optim.pmf`) with a step decay of the learning rate."""

  name: ClassVar[str] = "pmf"
  lr: float = setting(doc="learning rate", check=POSITIVE)
  lr_decay: float = setting(0.2, doc=_LR_DECAY_DOC, check=POSITIVE)
  lr_decay_steps: int = setting(doc="steps between decays", check=POSITIVE)
  rho: float = setting(doc="growth of beta every 100 steps", check=POSITIVE)
  weight_decay: float = setting(0.0, doc="weight decay", check=NON_NEGATIVE)


Hyper = BayesBiNNHyper | SteHyper | AdamHyper | BopHyper | PMFHyper
HYPERPARAMS: dict[str, type[Hyper]] = {
    cls.name: cls for cls in (BayesBiNNHyper, SteHyper, BopHyper, PMFHyper, AdamHyper)}
"""The hyperparameter class of each optimizer, by name."""
OPTIMIZERS: tuple[str, ...] = tuple(HYPERPARAMS)


def hyper_class(optimizer: str) -> type[Hyper]:
  """The hyperparameters of ``optimizer``; ValueError listing the known ones otherwise."""
  if optimizer not in HYPERPARAMS:
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}.")
  return HYPERPARAMS[optimizer]


def fields_help(cls: type, defaults: bool = True) -> list[str]:
  """One ``key (type or choices, default): doc`` line per field of ``cls``."""
  lines = []
  for field in dataclasses.fields(cls):
    check = field.metadata.get("check")
    kind = field_types(cls)[field.name]
    what = "|".join(check.choices) if isinstance(check, OneOf) else _type_name(kind)
    if isinstance(check, Range):
      what += f" {check}"
    default = field.default
    shown = "" if not defaults or default is dataclasses.MISSING or default is None else f", default {default!r}"
    lines.append(f"{field.name} ({what}{shown}): {field.metadata['doc']}")
  return lines


def _type_name(kind: Any) -> str:
  if typing.get_origin(kind) is tuple:
    return "epochs"
  args = [a for a in typing.get_args(kind) if a is not type(None)]
  return (args[0] if args else kind).__name__


def field_names(classes: Sequence[type]) -> list[str]:
  return [f.name for cls in classes for f in dataclasses.fields(cls)]
