"""Figures of the paper's experiments, written as PNG files.

Every function draws on a :class:`matplotlib.figure.Figure` created directly
(no pyplot, so no GUI backend and no global figure registry), writes a PNG to
``path`` (creating its parent directories), releases the figure and returns
``path`` unchanged. Inputs may be NumPy or JAX arrays; a ValueError names the
offending argument.

- :func:`plot_two_moons`: decision and uncertainty maps on a 2-D grid (the
  paper's two moons figure: BayesBiNN mode / mean vs. STE).
- :func:`plot_snelson`: 1-D regression, predictive mean +- 2 std per method.
- :func:`plot_continual`: average test accuracy after each task.
- :func:`plot_training_curves`: per-epoch records from ``metrics.jsonl``.
- :func:`plot_reliability`: reliability diagrams from
  :func:`bayesbinn_jax.train.metrics.reliability_bins` (several curves, e.g.
  before and after temperature scaling).
- :func:`plot_entropy_histograms`: distributions of the predictive entropy,
  e.g. in-distribution vs. out-of-distribution test inputs.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from bayesbinn_jax._checks import check_integer
from bayesbinn_jax.train.metrics import ReliabilityBins, as_float_array, ece_from_bins, predictive_entropy

PathT = TypeVar("PathT", str, os.PathLike)

_DPI = 110
_CLASS_STYLE = (
    {"marker": "o", "facecolor": "#2166ac", "label": "class 0"},
    {"marker": "^", "facecolor": "#b2182b", "label": "class 1"},
)
# x-axis keys of training records, never plotted as series
_INDEX_KEYS = ("epoch", "task", "step")


def _save(fig: Figure, path: PathT) -> PathT:
  """Writes ``fig`` as PNG to ``path`` (parents created), releases it, returns ``path``."""
  parent = os.path.dirname(os.fspath(path))
  if parent:
    os.makedirs(parent, exist_ok=True)
  try:
    fig.savefig(path, format="png", dpi=_DPI)
  finally:
    fig.clear()
  return path


def _nonempty_mapping(value: Any, name: str) -> Mapping[str, Any]:
  if not isinstance(value, Mapping) or len(value) == 0:
    raise ValueError(f"{name} must be a non-empty mapping name -> data; got {type(value).__name__} of length {_len(value)}.")
  return value


def _len(value: Any) -> str:
  try:
    return str(len(value))
  except TypeError:
    return "n/a"


def _bernoulli_entropy(p: np.ndarray) -> np.ndarray:
  """Predictive entropy ``H(p) = -p log p - (1 - p) log(1 - p)`` in nats of an array of ``p(y = 1)``."""
  flat = p.ravel()
  return predictive_entropy(np.stack([1.0 - flat, flat], axis=1)).reshape(p.shape)


def plot_two_moons(
    path: PathT,
    x_train: Any,
    y_train: Any,
    panels: Mapping[str, tuple[Any, Any, Any]],
) -> PathT:
  """Decision and uncertainty maps of binary classifiers on a 2-D grid.

  One column per entry of ``panels`` (in order). Top row: the predictive
  probability of class 1, ``p(y = 1 | x)``, on a diverging colormap over
  ``[0, 1]`` with the decision boundary ``p = 0.5`` drawn as a contour.
  Bottom row: the predictive entropy
  ``H(p) = -p log p - (1 - p) log(1 - p)`` in nats, over ``[0, log 2]``.
  The training points are overlaid on every map, marked by class.

  Args:
    path: output PNG file.
    x_train: ``(N, 2)`` training inputs.
    y_train: ``(N,)`` labels in ``{0, 1}``.
    panels: ordered mapping name -> ``(grid_x, grid_y, prob_class1)``, three
      arrays of one shape ``(H, W)`` (e.g. from :func:`numpy.meshgrid`),
      ``prob_class1`` in ``[0, 1]``. E.g. ``{"BayesBiNN (mode)": ...,
      "BayesBiNN (mean, C=10)": ..., "STE": ...}``.

  Returns:
    ``path``.
  """
  x = as_float_array(x_train, "x_train")
  if x.ndim != 2 or x.shape[1] != 2:
    raise ValueError(f"x_train must have shape (N, 2); got {x.shape}.")
  y = as_float_array(y_train, "y_train").ravel()
  if y.shape[0] != x.shape[0]:
    raise ValueError(f"y_train must have N = {x.shape[0]} labels (rows of x_train); got {y.shape[0]}.")
  if not np.all(np.isin(y, (0.0, 1.0))):
    raise ValueError("y_train must hold labels 0 and 1 only.")
  panels = _nonempty_mapping(panels, "panels")
  grids = []
  for name, panel in panels.items():
    if not isinstance(panel, Sequence) or len(panel) != 3:
      raise ValueError(f"panels[{name!r}] must be a tuple (grid_x, grid_y, prob_class1).")
    gx, gy, prob = (as_float_array(a, f"panels[{name!r}]") for a in panel)
    if gx.ndim != 2 or gx.shape != gy.shape or gx.shape != prob.shape:
      raise ValueError(
          f"panels[{name!r}] must hold three (H, W) arrays of one shape; got {gx.shape}, {gy.shape}, {prob.shape}."
      )
    if not np.all(np.isfinite(prob)) or prob.min() < 0.0 or prob.max() > 1.0:
      raise ValueError(f"panels[{name!r}] prob_class1 must be finite and in [0, 1].")
    grids.append((str(name), gx, gy, prob))

  k = len(grids)
  fig = Figure(figsize=(3.6 * k + 1.2, 6.6), layout="constrained")
  axes = fig.subplots(2, k, squeeze=False, sharex=True, sharey=True)
  prob_levels = np.linspace(0.0, 1.0, 21)
  ent_levels = np.linspace(0.0, math.log(2.0), 21)
  for col, (name, gx, gy, prob) in enumerate(grids):
    top, bottom = axes[0, col], axes[1, col]
    decision = top.contourf(gx, gy, prob, levels=prob_levels, cmap="RdBu_r", vmin=0.0, vmax=1.0)
    if prob.min() < 0.5 < prob.max():
      top.contour(gx, gy, prob, levels=[0.5], colors="k", linewidths=1.5)
    uncertainty = bottom.contourf(gx, gy, _bernoulli_entropy(prob), levels=ent_levels, cmap="viridis",
                                  vmin=0.0, vmax=math.log(2.0))
    for ax, edge in ((top, "k"), (bottom, "w")):
      for cls, style in enumerate(_CLASS_STYLE):
        pts = x[y == cls]
        ax.scatter(pts[:, 0], pts[:, 1], s=14, marker=style["marker"], c=style["facecolor"],
                   edgecolors=edge, linewidths=0.5, label=style["label"])
      ax.set_xlim(gx.min(), gx.max())
      ax.set_ylim(gy.min(), gy.max())
      ax.set_aspect("auto")
    top.set_title(name)
    bottom.set_xlabel("$x_1$")
  axes[0, 0].set_ylabel("$x_2$\np(y=1 | x)")
  axes[1, 0].set_ylabel("$x_2$\npredictive entropy")
  axes[0, 0].legend(loc="lower left", fontsize=7, framealpha=0.8)
  fig.colorbar(decision, ax=axes[0, :].tolist(), label="p(y = 1 | x)", ticks=[0, 0.25, 0.5, 0.75, 1])
  fig.colorbar(uncertainty, ax=axes[1, :].tolist(), label="entropy (nats)",
               ticks=[0, 0.2, 0.4, 0.6, math.log(2.0)], format="%.2f")
  return _save(fig, path)


def plot_snelson(
    path: PathT,
    x_train: Any,
    y_train: Any,
    x_test: Any,
    curves: Mapping[str, tuple[Any, Any]],
) -> PathT:
  """1-D regression fits: one subplot per method, predictive mean and ``mean +- 2 std``.

  Args:
    path: output PNG file.
    x_train: ``(N,)`` or ``(N, 1)`` training inputs.
    y_train: ``N`` training targets.
    x_test: ``(M,)`` or ``(M, 1)`` test inputs (need not be sorted).
    curves: ordered mapping name -> ``(mean, std)``, each with ``M``
      elements over ``x_test``; ``std >= 0``.

  Returns:
    ``path``.
  """
  xtr = as_float_array(x_train, "x_train").ravel()
  ytr = as_float_array(y_train, "y_train").ravel()
  if xtr.size != ytr.size:
    raise ValueError(f"y_train must have as many elements as x_train ({xtr.size}); got {ytr.size}.")
  xte = as_float_array(x_test, "x_test").ravel()
  if xte.size < 1:
    raise ValueError("x_test must have at least one element.")
  curves = _nonempty_mapping(curves, "curves")
  order = np.argsort(xte, kind="stable")
  xs = xte[order]
  series = []
  for name, curve in curves.items():
    if not isinstance(curve, Sequence) or len(curve) != 2:
      raise ValueError(f"curves[{name!r}] must be a tuple (mean, std).")
    mean = as_float_array(curve[0], f"curves[{name!r}]").ravel()
    std = as_float_array(curve[1], f"curves[{name!r}]").ravel()
    if mean.size != xte.size or std.size != xte.size:
      raise ValueError(
          f"curves[{name!r}] mean and std must have M = {xte.size} elements (x_test); got {mean.size}, {std.size}."
      )
    if np.any(std < 0):
      raise ValueError(f"curves[{name!r}] std must be >= 0.")
    series.append((str(name), mean[order], std[order]))

  k = len(series)
  fig = Figure(figsize=(4.2 * k, 3.6), layout="constrained")
  axes = fig.subplots(1, k, squeeze=False, sharex=True, sharey=True)[0]
  for ax, (name, mean, std) in zip(axes, series):
    ax.fill_between(xs, mean - 2 * std, mean + 2 * std, color="tab:blue", alpha=0.25, linewidth=0,
                    label="mean $\\pm$ 2 std")
    ax.plot(xs, mean, color="tab:blue", linewidth=1.8, label="predictive mean")
    ax.scatter(xtr, ytr, s=8, color="k", alpha=0.7, label="training data", zorder=3)
    ax.set_title(name)
    ax.set_xlabel("x")
  axes[0].set_ylabel("y")
  axes[0].legend(loc="best", fontsize=7)
  return _save(fig, path)


def plot_continual(
    path: PathT,
    curves: Mapping[str, Sequence[float]],
    *,
    percent: bool | None = None,
) -> PathT:
  """Average test accuracy over the tasks seen so far, after training on each task.

  Task ``t = 1..T`` on the x axis, accuracy in % on the y axis. Curves may
  have different lengths.

  Args:
    path: output PNG file.
    curves: ordered mapping name -> accuracies after task 1, 2, ..., T.
    percent: whether the values are already in %. None (default) guesses:
      values all within ``[0, 1]`` are fractions (and are multiplied by 100).

  Returns:
    ``path``.
  """
  curves = _nonempty_mapping(curves, "curves")
  series = []
  for name, values in curves.items():
    acc = as_float_array(values, f"curves[{name!r}]").ravel()
    if acc.size < 1:
      raise ValueError(f"curves[{name!r}] must hold at least one accuracy.")
    series.append((str(name), acc))
  if percent is None:
    percent = not all(np.nanmax(np.abs(acc)) <= 1.0 for _, acc in series)
  scale = 1.0 if percent else 100.0

  longest = max(acc.size for _, acc in series)
  fig = Figure(figsize=(max(4.5, 0.5 * longest + 3.0), 3.6), layout="constrained")
  ax = fig.subplots()
  for name, acc in series:
    ax.plot(np.arange(1, acc.size + 1), acc * scale, marker="o", markersize=4, label=name)
  ax.set_xlabel("task")
  ax.set_ylabel("average test accuracy (%)")
  step = max(1, math.ceil(longest / 20))
  ax.set_xticks(np.arange(1, longest + 1, step))
  ax.set_xlim(0.5, longest + 0.5)
  ax.grid(alpha=0.3)
  ax.legend(loc="best", fontsize=8)
  return _save(fig, path)


def _number(value: Any) -> float | None:
  """``value`` as a finite float, or None for a missing / non-numeric / non-finite entry."""
  if value is None or isinstance(value, (bool, np.bool_, str, bytes)):
    return None
  if not isinstance(value, numbers.Real):
    try:  # 0-d NumPy / JAX arrays
      if np.ndim(value) != 0:
        return None
    except Exception:  # noqa: BLE001 - anything array-like that numpy rejects
      return None
  try:
    number = float(value)
  except (TypeError, ValueError):
    return None
  return number if math.isfinite(number) else None


def _plot_series(ax: Axes, xs: np.ndarray, records: Sequence[Mapping[str, Any]], keys: list[str]) -> None:
  for key in keys:
    pts = [(x, _number(r.get(key))) for x, r in zip(xs, records)]
    pts = [(x, v) for x, v in pts if v is not None]
    if pts:
      px, py = zip(*pts)
      ax.plot(px, py, marker="o" if len(pts) < 30 else None, markersize=3, label=key)
  if keys:
    ax.legend(loc="best", fontsize=7)
  else:
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="0.5")


def plot_training_curves(path: PathT, records: Sequence[Mapping[str, Any]]) -> PathT:
  """Per-epoch training curves from the records of ``metrics.jsonl``.

  Keys containing ``"loss"`` share one subplot, keys containing ``"accuracy"``
  another; any other numeric key (e.g. ``"lr"``, ``"test_ece"``) goes to a
  third subplot (log scale when all its values are positive), drawn only if
  such keys exist. ``"epoch"``, ``"task"`` and ``"step"`` are never plotted as
  series. A record may lack any key: each series uses the records that have it.

  The x axis is ``"epoch"`` when every record has one and they increase;
  otherwise (e.g. continual learning, where the epoch restarts with each task)
  it is the record's position ``1..R``, and a change of ``"task"`` is marked
  with a dashed vertical line.

  Args:
    path: output PNG file.
    records: one mapping per epoch, e.g. ``{"epoch": 1, "train_loss": 0.5,
      "train_accuracy": 0.8, "val_accuracy": 0.78, "lr": 1e-3}``.

  Returns:
    ``path``.
  """
  if isinstance(records, (str, bytes, Mapping)) or not isinstance(records, Sequence):
    raise ValueError(f"records must be a list of dicts; got {type(records).__name__}.")
  if len(records) == 0:
    raise ValueError("records must hold at least one record; got an empty list.")
  for i, record in enumerate(records):
    if not isinstance(record, Mapping):
      raise ValueError(f"records[{i}] must be a dict; got {type(record).__name__}.")

  keys: list[str] = []
  for record in records:
    for key in record:
      if key not in keys and key not in _INDEX_KEYS and _number(record[key]) is not None:
        keys.append(key)
  loss_keys = [k for k in keys if "loss" in k]
  acc_keys = [k for k in keys if "accuracy" in k and k not in loss_keys]
  other_keys = [k for k in keys if k not in loss_keys and k not in acc_keys]

  epochs = [_number(r.get("epoch")) for r in records]
  has_task = any(_number(r.get("task")) is not None for r in records)
  by_epoch = (
      not has_task
      and all(e is not None for e in epochs)
      and all(b > a for a, b in zip(epochs, epochs[1:]) if a is not None and b is not None)
  )
  xs = np.asarray(epochs, dtype=np.float64) if by_epoch else np.arange(1, len(records) + 1, dtype=np.float64)

  n_panels = 3 if other_keys else 2
  fig = Figure(figsize=(4.2 * n_panels, 3.6), layout="constrained")
  axes = fig.subplots(1, n_panels, squeeze=False, sharex=True)[0]
  panels = [(axes[0], loss_keys, "loss"), (axes[1], acc_keys, "accuracy")]
  if other_keys:
    panels.append((axes[2], other_keys, "value"))
  for ax, panel_keys, ylabel in panels:
    _plot_series(ax, xs, records, panel_keys)
    ax.set_ylabel(ylabel)
    ax.set_xlabel("epoch" if by_epoch else "epoch (cumulative)")
    ax.grid(alpha=0.3)
  if other_keys:
    values = [_number(r.get(k)) for r in records for k in other_keys]
    if all(v is None or v > 0 for v in values):
      axes[2].set_yscale("log")

  if has_task:
    tasks = [_number(r.get("task")) for r in records]
    previous = None
    for x, task in zip(xs, tasks):
      if task is not None and previous is not None and task != previous:
        for ax in axes:
          ax.axvline(x - 0.5, color="0.5", linestyle="--", linewidth=0.8)
      if task is not None:
        previous = task
  return _save(fig, path)


def _as_bins(value: Any, name: str) -> ReliabilityBins:
  """Accepts a :class:`ReliabilityBins` or a mapping with ``confidence``, ``accuracy``, ``count`` (and ``edges``)."""
  if isinstance(value, ReliabilityBins):
    fields = value._asdict()
  elif isinstance(value, Mapping):
    fields = dict(value)
  else:
    raise ValueError(f"{name} must be the output of reliability_bins; got {type(value).__name__}.")
  missing = [f for f in ("confidence", "accuracy", "count") if f not in fields]
  if missing:
    raise ValueError(f"{name} lacks {', '.join(missing)}.")
  conf = as_float_array(fields["confidence"], name).ravel()
  acc = as_float_array(fields["accuracy"], name).ravel()
  count = as_float_array(fields["count"], name).ravel()
  m = count.size
  if m < 1 or conf.size != m or acc.size != m:
    raise ValueError(f"{name} confidence, accuracy and count must have one equal length >= 1.")
  if count.sum() < 1:
    raise ValueError(f"{name} holds no examples (count sums to 0).")
  edges = fields.get("edges")
  edges = np.arange(m + 1, dtype=np.float64) / m if edges is None else as_float_array(edges, name).ravel()
  if edges.size != m + 1:
    raise ValueError(f"{name} edges must have {m + 1} elements; got {edges.size}.")
  return ReliabilityBins(edges=edges, confidence=conf, accuracy=acc, count=count)


def plot_reliability(path: PathT, curves: Mapping[str, Any]) -> PathT:
  """Reliability diagrams: per-bin accuracy against mean confidence, with the bins' mass below.

  Top: ``acc(B_b)`` against ``conf(B_b)`` for the non-empty bins of each
  curve, with the diagonal of perfect calibration; the legend gives each
  curve's ``ECE = sum_b (|B_b| / N) |acc(B_b) - conf(B_b)|``
  (:func:`bayesbinn_jax.train.metrics.ece_from_bins`). Bottom: the fraction
  of examples ``|B_b| / N`` in each bin.

  Args:
    path: output PNG file.
    curves: ordered mapping name -> output of
      :func:`bayesbinn_jax.train.metrics.reliability_bins` (or a mapping with
      the same fields).

  Returns:
    ``path``.
  """
  curves = _nonempty_mapping(curves, "curves")
  series = [(str(name), _as_bins(b, f"curves[{name!r}]")) for name, b in curves.items()]

  fig = Figure(figsize=(4.6, 5.4), layout="constrained")
  top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
  top.plot([0, 1], [0, 1], linestyle="--", color="0.5", linewidth=1, label="perfect calibration")
  for i, (name, bins) in enumerate(series):
    color = f"C{i}"
    filled = bins.count > 0
    top.plot(bins.confidence[filled], bins.accuracy[filled], marker="o", markersize=4, color=color,
             label=f"{name} (ECE {100 * ece_from_bins(bins):.2f}%)")
    fraction = bins.count / bins.count.sum()
    bottom.stairs(fraction, bins.edges, color=color, linewidth=1.5)
  top.set_xlim(0, 1)
  top.set_ylim(0, 1)
  top.set_ylabel("accuracy")
  top.grid(alpha=0.3)
  top.legend(loc="upper left", fontsize=7)
  bottom.set_xlabel("confidence")
  bottom.set_ylabel("fraction")
  bottom.set_ylim(bottom=0)
  bottom.grid(alpha=0.3)
  return _save(fig, path)


def plot_entropy_histograms(
    path: PathT,
    panels: Mapping[str, Mapping[str, Any]],
    *,
    num_classes: int | None = None,
    num_bins: int = 30,
) -> PathT:
  """Histograms of predictive entropies, one subplot per predictive, one outline per set.

  Each set's histogram is normalised to fractions of that set (bar heights sum
  to 1), so sets of different sizes compare directly. All subplots share the
  bin edges: ``num_bins`` equal-width bins over ``[0, log C]`` when
  ``num_classes`` is given (the entropy's range), else over ``[0, max H]``.
  The entropies are :func:`bayesbinn_jax.train.metrics.predictive_entropy`
  ``H_n = -sum_c p_nc log p_nc`` in nats; out-of-distribution detection
  scores inputs by it (Hendrycks and Gimpel, 2017).

  Args:
    path: output PNG file.
    panels: ordered mapping title -> (ordered mapping set name -> ``(N,)``
      entropies ``>= 0``), e.g. ``{"BayesBiNN (mode), OOD AUROC 0.93":
      {"MNIST test": h_in, "OOD: noise": h_out}, "BayesBiNN (mean, C=10)":
      {...}}``.
    num_classes: ``C``, fixing the x range to ``[0, log C]``; None to use the
      data's maximum.
    num_bins: number of histogram bins, an integer >= 1.

  Returns:
    ``path``.

  Raises:
    ValueError: naming ``panels`` (or the offending entry), ``num_classes`` or
      ``num_bins`` when invalid.
  """
  panels = _nonempty_mapping(panels, "panels")
  check_integer("num_bins", num_bins, low=1)
  if num_classes is not None:
    check_integer("num_classes", num_classes, low=2)
  series = []
  for title, sets in panels.items():
    sets = _nonempty_mapping(sets, f"panels[{title!r}]")
    entries = []
    for name, values in sets.items():
      label = f"panels[{title!r}][{name!r}]"
      h = as_float_array(values, label).ravel()
      if h.size < 1 or not np.all(np.isfinite(h)) or np.any(h < 0.0):
        raise ValueError(f"{label} must hold at least one finite entropy >= 0.")
      entries.append((str(name), h))
    series.append((str(title), entries))
  top = math.log(num_classes) if num_classes is not None else max(h.max() for _, e in series for _, h in e)
  edges = np.linspace(0.0, max(top, 1e-6), int(num_bins) + 1)

  k = len(series)
  fig = Figure(figsize=(4.2 * k, 3.4), layout="constrained")
  axes = fig.subplots(1, k, squeeze=False, sharex=True, sharey=True)[0]
  for ax, (title, entries) in zip(axes, series):
    for i, (name, h) in enumerate(entries):
      fraction, _ = np.histogram(np.clip(h, 0.0, edges[-1]), bins=edges)
      ax.stairs(fraction / h.size, edges, color=f"C{i}", linewidth=1.5, fill=False,
                label=f"{name} (n={h.size}, mean {h.mean():.3f})")
      ax.stairs(fraction / h.size, edges, color=f"C{i}", alpha=0.15, fill=True)
    ax.set_title(title, fontsize=9)
    ax.set_xlabel("predictive entropy (nats)")
    ax.set_xlim(edges[0], edges[-1])
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", fontsize=7)
  axes[0].set_ylabel("fraction of inputs")
  return _save(fig, path)
