"""A run's config: the spec's preset, ``--set`` overrides, and their checks.

A config is a flat dict. Its keys are those of the experiment plus those of
the chosen optimizer (both in :mod:`bayesbinn_jax.experiments.specs`);
``--set key=value`` overrides any of them, parsed to the type of the default.
Settings the paper does not give (e.g. Bop on two moons) are marked as ours in
:data:`NOT_FROM_THE_PAPER`.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

from bayesbinn_jax.experiments.specs import EXPERIMENTS, SPECS, get_spec
from bayesbinn_jax.nn.monte_carlo import LOOPS
from bayesbinn_jax.optim.noise import GENERATORS
from bayesbinn_jax.train.methods import OPTIMIZERS, OUTPUT_SCALES
from bayesbinn_jax.train.schedules import SCHEDULES

_ENGINE = dict(max_nonfinite_steps=20)
"""Engine settings shared by every experiment: stop after this many consecutive steps
with NaN or Inf gradients (each one skipped, see ``build_method``); 0 never stops."""

RENAMED_KEYS = {"rng": "generator"}
"""Settings renamed since the previous release: ``--set old=...`` names the new key."""

ACTIVATIONS = ("real", "binary")
ACTIVATION_QUANTIZERS = ("ste_sign", "approx_sign")
PARAM_DTYPES = ("float32", "bfloat16", "float16")

NOT_FROM_THE_PAPER = {name: spec.presets_ours for name, spec in SPECS.items() if spec.presets_ours}
"""Presets chosen by us where the paper gives no setting."""


def preset(experiment: str, optimizer: str) -> dict[str, Any]:
  """The paper's config of ``experiment`` trained with ``optimizer``."""
  spec = get_spec(experiment)
  if optimizer not in OPTIMIZERS:
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {optimizer!r}.")
  config = dict(spec.settings, **_ENGINE)
  config.update(spec.presets[optimizer])
  return json.loads(json.dumps(config))  # a deep copy: lists in presets stay untouched


INT_LIMIT = 2**31
"""Integer settings stay below this: step counters and schedules compute in int32."""


def _is_number(value: Any) -> bool:
  """True for a finite int or float (not a bool, NaN or Inf)."""
  return (isinstance(value, (int, float)) and not isinstance(value, bool)
          and value == value and value not in (math.inf, -math.inf))


def _parse(key: str, text: str, default: Any) -> Any:
  """Parses ``text`` to the type of ``default``; ValueError naming ``key`` otherwise."""
  try:
    if isinstance(default, bool):
      lowered = text.strip().lower()
      if lowered not in ("true", "false", "1", "0", "yes", "no"):
        raise ValueError
      return lowered in ("true", "1", "yes")
    if isinstance(default, int):
      return int(text)
    if isinstance(default, float):
      value = float(text)
      if not _is_number(value):
        raise ValueError
      return value
    if isinstance(default, list):
      value = json.loads(text) if text.strip().startswith("[") else [
          float(v) if "." in v or "e" in v.lower() else int(v) for v in text.split(",") if v.strip()]
      if not isinstance(value, list) or not all(_is_number(v) for v in value):
        raise ValueError
      return value
    return str(text)
  except ValueError:
    kind = "true/false" if isinstance(default, bool) else type(default).__name__
    raise ValueError(f"--set {key}={text!r}: expected a {kind} (default {default!r}).") from None


_POSITIVE = ("lr", "lr_end", "temperature", "epochs", "batch_size", "eval_batch_size",
             "train_samples", "lambda_init", "lr_decay", "lr_decay_steps", "gamma",
             "gamma_decay", "gamma_decay_every", "rho", "num_tasks", "train_set_scale",
             "eval_every", "checkpoint_every", "output_scale_lr")
_NON_NEGATIVE = ("max_nonfinite_steps", "test_samples", "lambda_init_std", "kl_weight", "threshold",
                 "weight_decay",
                 "train_subset", "momentum", "val_fraction")


def apply_overrides(config: Mapping[str, Any], overrides: list[str]) -> dict[str, Any]:
  """``config`` with each ``key=value`` of ``overrides`` applied and checked.

  Raises ValueError for a malformed item, an unknown key (listing the known
  ones), a value of the wrong type, or a value out of range.
  """
  result = dict(config)
  for item in overrides:
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
      raise ValueError(f"--set takes key=value; got {item!r}.")
    if key in RENAMED_KEYS and key not in result:
      raise ValueError(f"--set {key}: renamed; use --set {RENAMED_KEYS[key]}={text}.")
    if key not in result:
      raise ValueError(f"--set {key}: unknown key for this experiment and optimizer; "
                       f"known keys: {', '.join(sorted(result))}.")
    result[key] = _parse(key, text, result[key])
  check_config(result)
  return result


def check_config(config: Mapping[str, Any]) -> None:
  """Raises ValueError naming the first key whose value is out of range.

  Every float must be finite (NaN fails every range check: ``not nan > 0``),
  every integer below :data:`INT_LIMIT` in magnitude.
  """
  for key, value in config.items():
    if isinstance(value, float) and not _is_number(value):
      raise ValueError(f"{key} must be a finite number; got {value!r}.")
    if isinstance(value, int) and not isinstance(value, bool) and not -INT_LIMIT < value < INT_LIMIT:
      raise ValueError(f"{key} must be below 2**31 in magnitude; got {value!r}.")
  for key in _POSITIVE:
    if key in config and not config[key] > 0:
      raise ValueError(f"{key} must be > 0; got {config[key]!r}.")
  for key in _NON_NEGATIVE:
    if key in config and not config[key] >= 0:
      raise ValueError(f"{key} must be >= 0; got {config[key]!r}.")
  if not 0 <= config.get("val_fraction", 0) < 1:
    raise ValueError(f"val_fraction must be in [0, 1); got {config['val_fraction']!r}.")
  if not 0 <= config.get("momentum", 0) < 1:
    raise ValueError(f"momentum must be in [0, 1); got {config['momentum']!r}.")
  milestones = config.get("lr_milestones", [])
  if not all(isinstance(m, int) and not isinstance(m, bool) and 0 <= m < INT_LIMIT for m in milestones):
    raise ValueError(f"lr_milestones must be epoch numbers (integers >= 0); got {milestones!r}.")
  if "mc_loop" in config and config["mc_loop"] not in LOOPS:
    raise ValueError(f"mc_loop must be one of {', '.join(LOOPS)}; got {config['mc_loop']!r}.")
  for key, choices in (("generator", GENERATORS), ("activations", ACTIVATIONS),
                       ("activation_quantizer", ACTIVATION_QUANTIZERS),
                       ("param_dtype", PARAM_DTYPES), ("lr_schedule", SCHEDULES),
                       ("output_scale", OUTPUT_SCALES)):
    if key in config and config[key] not in choices:
      raise ValueError(f"{key} must be one of {', '.join(choices)}; got {config[key]!r}.")

