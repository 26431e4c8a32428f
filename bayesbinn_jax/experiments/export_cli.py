"""``bayesbinn-export`` and ``bayesbinn-predict``: train -> export -> predict from the command line.

``bayesbinn-export RUN_DIR --out model.xnor [--samples K]`` rebuilds a saved run as
``--evaluate`` does (its config.json, data and newest intact checkpoint, through
:func:`~bayesbinn_jax.experiments.prepare.prepare` and
:func:`~bayesbinn_jax.experiments.pipeline.restore`), takes its
mode network (``method.mode_params``: BayesBiNN's ``sign(lambda)``, STE's signs,
Bop's weights) or, with ``--samples K``, K networks drawn from the BayesBiNN
posterior (``bb.sample_binary``, K bits per weight), packs it for xnor/popcount
inference (:func:`bayesbinn_jax.export.save_xnor`: refused in one line, before
anything is written, unless the network is fully binary) and prints its
:func:`bayesbinn_jax.nn.summary`. The file also records how the run turned stored
examples into network inputs (``uint8`` images / 255, then the normalisation's
mean and std), so that ``bayesbinn-predict`` takes the stored examples.

``bayesbinn-predict model.xnor --data-file X.npz [--out preds.npz]`` reads
``x_test`` (and ``y_test``) of a dataset archive, or ``x`` (and ``y``), applies the
recorded preprocessing, predicts with the packed network, prints the accuracy when
labels are present and the latency per example (batch 1, median of 20 calls, and
at ``--batch-size``), and writes ``predictions`` (class indices) and
``probabilities`` to ``--out``.

A file that is not a packed model, data of the wrong shape or dtype, labels outside
the model's classes, a run that cannot be packed, an ``--out`` that holds a file these
commands did not write (never overwritten): one line on stderr and exit status 2.

Also runnable as ``python -m bayesbinn_jax.experiments.export_cli {export,predict} ...``.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
import zipfile
from typing import Any, Sequence

import numpy as np

EXIT_USAGE = 2
PREPROCESSING_KEY = "preprocessing"


class ExportError(ValueError):
  """A run that cannot be exported, or data that cannot be predicted (one line)."""


class _Parser(argparse.ArgumentParser):
  """An ArgumentParser whose errors are one line on stderr (exit status 2), without the
  usage block (``--help`` prints it), as ``bayesbinn-train``'s."""

  def error(self, message: str) -> Any:
    self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(str(message).split())}\n")


# --------------------------------------------------------------------------- outputs


def _is_packed_file(path: str) -> bool:
  """Whether ``path`` is a file ``bayesbinn-export`` (``save_packed``) wrote."""
  try:
    with zipfile.ZipFile(path) as archive:
      if "header.npy" not in archive.namelist():
        return False
      with archive.open("header.npy") as handle:
        return b"bayesbinn_jax.packed" in handle.read(4096)
  except (OSError, zipfile.BadZipFile):
    return False


def _is_predictions_file(path: str) -> bool:
  """Whether ``path`` is a file ``bayesbinn-predict --out`` wrote."""
  try:
    with np.load(path, allow_pickle=False) as archive:
      return sorted(archive.files) == ["predictions", "probabilities"]
  except (OSError, ValueError, zipfile.BadZipFile):
    return False


def check_output_file(path: str, what: str, ours: Any) -> None:
  """Refuses ``--out path`` before any work when it cannot be written, or when it holds a file
  that is not ``what`` (``ours(path)`` is False): a user's file is never overwritten. A file of
  ours (an earlier export or predictions) may be replaced.

  Raises:
    ExportError: one line naming ``--out`` and the fix.
  """
  if os.path.isdir(path):
    raise ExportError(f"--out {path}: is a directory; pass the path of the {what} to write.")
  folder = os.path.dirname(os.path.abspath(path))
  if not os.path.isdir(folder):
    raise ExportError(f"--out {path}: the folder {folder} does not exist; create it or choose "
                      "another --out.")
  if os.path.lexists(path) and not ours(path):
    raise ExportError(f"--out {path}: the file exists and is not a {what} of bayesbinn_jax; it is "
                      "left as it is: choose another --out, or remove it first.")


# --------------------------------------------------------------------------- export


def _preprocessing(spec: Any, dataset: Any) -> dict:
  """How the run maps stored examples to inputs, as JSON (see ``specs.preprocessing``)."""
  from bayesbinn_jax import data  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.experiments.specs import MNIST_MEAN, MNIST_STD  # pylint: disable=import-outside-toplevel

  if spec.normalisation == "standardise":
    return {"kind": "affine", "mean": float(np.mean(dataset.x_train)),
            "std": float(np.std(dataset.x_train))}
  if dataset.x_train.dtype != np.uint8:
    return {"kind": "cast"}
  mean: Any
  std: Any
  if spec.normalisation == "per-channel":
    mean, std = data.channel_mean_std(dataset.x_train)
  else:
    mean, std = MNIST_MEAN, MNIST_STD
  return {"kind": "images", "mean": np.asarray(mean, np.float64).tolist(),
          "std": np.asarray(std, np.float64).tolist()}


def apply_preprocessing(spec: dict, x: np.ndarray) -> np.ndarray:
  """The network inputs of stored examples ``x`` under a recorded preprocessing."""
  from bayesbinn_jax import data  # pylint: disable=import-outside-toplevel

  kind = spec.get("kind")
  if kind == "images":
    return data.images_to_float(x, spec["mean"], spec["std"])
  if kind == "affine":
    return ((np.asarray(x, np.float32) - spec["mean"]) / spec["std"]).astype(np.float32)
  return np.asarray(x, np.float32)


def export_run(run_dir: str, out: str, samples: int | None = None, seed: int = 0) -> dict:
  """Packs the saved run in ``run_dir`` into ``out``; returns the file's metadata.

  Raises:
    ExportError, SavedRunError, RunError, DataError, CheckpointError, PackingError: one line.
  """
  import jax  # pylint: disable=import-outside-toplevel

  import bayesbinn_jax as bb  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.experiments import pipeline  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.experiments.config import read_saved_run  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.experiments.options import RunOptions  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.experiments.prepare import prepare  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.experiments.specs import get_spec  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.export import save_xnor  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train.checkpoint import Checkpointer  # pylint: disable=import-outside-toplevel

  saved = read_saved_run(run_dir)
  options = RunOptions(config=saved.config, out_dir=run_dir, data_file=saved.data_file,
                       data_dir=saved.data_dir, cl_prior=saved.cl_prior or "posterior",
                       quiet=True, figures=False)
  spec = get_spec(options.experiment)
  if spec.continual:
    raise ExportError(f"{run_dir}: a continual-learning run (its inputs depend on the task's "
                      "pixel permutation); export a single-task run.")
  if spec.task != "classification":
    raise ExportError(f"{run_dir}: a {spec.task} run; bayesbinn-predict reports classes.")
  if samples is not None and options.optimizer != "bayesbinn":
    raise ExportError(f"{run_dir}: --samples draws from the BayesBiNN posterior; this run "
                      f"trained with {options.optimizer}.")
  prepared = prepare(spec, options)
  checkpointer = Checkpointer(os.path.join(run_dir, "checkpoints"))
  if checkpointer.latest() is None:
    raise ExportError(f"{run_dir}: no checkpoint to export (the run saved none yet).")
  state, epoch, _ = pipeline.restore(prepared, options, checkpointer, "exporting")
  checkpointer.close()
  method = prepared.training.method
  model = prepared.spec.network(options.config.run, method.quantizer, prepared.run_data.num_outputs)
  batch_stats = jax.device_get(state.batch_stats)
  if samples is None:
    params = jax.device_get(method.mode_params(state.opt_state, state.params))
  else:
    lam = bb.posterior_lambda(state.opt_state)
    params = jax.device_get(bb.sample_binary(lam, jax.random.PRNGKey(seed), samples))
  x_train = prepared.run_data.dataset.x_train
  input_shape = (1,) + tuple(x_train.shape[1:])
  metadata = {PREPROCESSING_KEY: _preprocessing(spec, prepared.run_data.dataset),
              "run": {"experiment": options.experiment, "optimizer": options.optimizer,
                      "epoch": epoch, "run_dir": os.path.abspath(run_dir),
                      "samples": samples, "seed": seed if samples else None},
              "stored_input": {"shape": list(x_train.shape[1:]), "dtype": str(x_train.dtype)}}
  variables = {"params": params, "batch_stats": batch_stats}
  save_xnor(out, model, variables, ensemble=samples is not None, input_shape=input_shape,
            metadata=metadata)
  first = jax.tree.map(lambda p: np.asarray(p)[0], params) if samples else params
  bb.nn.summary(model, {"params": first, "batch_stats": batch_stats}, input_shape=input_shape)
  return metadata


def export_main(argv: Sequence[str] | None = None) -> int:
  """``bayesbinn-export``: returns the exit status."""
  parser = _Parser(
      prog="bayesbinn-export", description="Pack a trained run's fully binary network into one "
      "bit per weight for xnor/popcount inference, and print its summary.")
  parser.add_argument("run_dir", help="the output directory of a run (config.json, checkpoints/)")
  parser.add_argument("--out", required=True, help="the packed model file to write")
  parser.add_argument("--samples", type=int, default=None,
                      help="pack K networks drawn from the BayesBiNN posterior (K bits per weight)")
  parser.add_argument("--seed", type=int, default=0, help="seed of the posterior draws")
  args = parser.parse_args(argv)
  if args.samples is not None and args.samples < 1:
    parser.error("--samples must be >= 1")
  try:
    check_output_file(args.out, "packed model file", _is_packed_file)
    meta = export_run(args.run_dir, args.out, args.samples, args.seed)
  except (ValueError, OSError) as error:
    return _fail("bayesbinn-export", error)
  what = f"{args.samples} posterior samples" if args.samples else "mode network"
  print(f"wrote {args.out} ({os.path.getsize(args.out):,} bytes): {meta['run']['experiment']} / "
        f"{meta['run']['optimizer']} after epoch {meta['run']['epoch']}, {what}")
  return 0


# --------------------------------------------------------------------------- predict


def _read_data(path: str) -> tuple[np.ndarray, np.ndarray | None, str]:
  """``(x, y or None, the labels' name)`` of an archive's ``x_test``/``y_test`` or ``x``/``y``."""
  try:
    if os.path.isfile(path) and not zipfile.is_zipfile(path):
      raise ExportError(f"{path}: not an .npz archive (no zip signature); pass an .npz with "
                        "x_test (and y_test) or x (and y).")
    with np.load(path, allow_pickle=False) as archive:
      names = set(archive.files)
      for x_key, y_key in (("x_test", "y_test"), ("x", "y")):
        if x_key in names:
          return archive[x_key], archive[y_key] if y_key in names else None, y_key
  except FileNotFoundError:
    raise ExportError(f"{path}: no such file.") from None
  except ExportError:
    raise
  except (OSError, ValueError) as error:
    raise ExportError(f"{path}: not a readable .npz archive ({error}).") from None
  raise ExportError(f"{path}: holds neither x_test nor x (found {sorted(names)}).")


def predict_file(model_path: str, data_path: str, out: str | None = None,
                 batch_size: int = 100) -> dict:
  """Predicts ``data_path``'s examples with the packed model; returns the report."""
  import jax  # pylint: disable=import-outside-toplevel

  from bayesbinn_jax.atomic import write_atomic  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.export import load_xnor  # pylint: disable=import-outside-toplevel

  net, metadata = load_xnor(model_path)
  x, y, y_key = _read_data(data_path)
  stored = metadata.get("stored_input") or {}
  expected = tuple(stored.get("shape") or metadata["xnor"]["input_shape"][1:])
  if x.ndim >= 1 and tuple(x.shape[1:]) + (1,) == expected:  # grey images without channel axis
    x = x[..., None]
  if x.ndim < 1 or tuple(x.shape[1:]) != expected:
    raise ExportError(f"{data_path}: examples of shape {tuple(x.shape[1:])}; the model takes "
                      f"{expected}.")
  stored_dtype = stored.get("dtype")
  if stored_dtype == "uint8" and x.dtype != np.uint8:
    raise ExportError(f"{data_path}: examples are {x.dtype}, but the model was trained on uint8 "
                      "images (pixels 0..255, normalised as in training); pass them as uint8.")
  if y is not None and (y.ndim != 1 or len(y) != len(x)):
    raise ExportError(f"{data_path}: {len(y)} labels of shape {y.shape} for {len(x)} examples.")
  inputs: Any = apply_preprocessing(metadata.get(PREPROCESSING_KEY, {"kind": "cast"}), x)
  probabilities = []
  start = time.perf_counter()
  for i in range(0, len(inputs), batch_size):
    probabilities.append(np.asarray(net.predict_proba(inputs[i:i + batch_size])))
  elapsed = time.perf_counter() - start  # includes the first call's tracing and compilation
  probs = np.concatenate(probabilities) if probabilities else np.zeros((0, 0), np.float32)
  single = inputs[:1]
  jax.block_until_ready(net.predict_proba(single))
  times = []
  for _ in range(20 if len(inputs) else 0):
    begin = time.perf_counter()
    jax.block_until_ready(net.predict_proba(single))
    times.append(time.perf_counter() - begin)
  batch = inputs[:batch_size]
  batch_times = []
  for _ in range(5 if len(inputs) else 0):
    begin = time.perf_counter()
    jax.block_until_ready(net.predict_proba(batch))
    batch_times.append(time.perf_counter() - begin)
  report = {"examples": int(len(x)), "seconds": elapsed,
            "latency_ms_batch_1": 1e3 * float(np.median(times)) if times else None,
            "latency_ms_per_example": (1e3 * float(np.median(batch_times)) / len(batch)
                                       if batch_times else None),
            "batch_size": int(min(batch_size, len(x))), "kernel": net.kernel}
  predictions = probs.argmax(-1) if len(probs) else np.zeros((0,), np.int64)
  if y is not None:
    classes = int(probs.shape[-1]) if probs.ndim == 2 and len(probs) else None
    outside = (y < 0) | (y >= classes) if classes else np.zeros(len(y), bool)
    if not np.issubdtype(y.dtype, np.integer) or outside.any():
      found = y[outside][:3].tolist() if np.issubdtype(y.dtype, np.integer) else str(y.dtype)
      raise ExportError(f"{data_path}: {y_key} holds labels the model cannot predict ({found}; "
                        f"it predicts the integer classes 0 to {(classes or 1) - 1}); pass the "
                        f"labels of the model's classes, or leave {y_key} out.")
    report["accuracy"] = float(np.mean(predictions == y)) if len(y) else float("nan")
  if out is not None:
    buffer = io.BytesIO()
    np.savez(buffer, predictions=predictions, probabilities=probs)
    write_atomic(out, buffer.getvalue())  # at exactly ``out``: np.savez would append .npz
  return report


def predict_main(argv: Sequence[str] | None = None) -> int:
  """``bayesbinn-predict``: returns the exit status."""
  parser = _Parser(
      prog="bayesbinn-predict", description="Predict with a packed model written by "
      "bayesbinn-export: accuracy when labels are present, latency per example.")
  parser.add_argument("model", help="a packed model file (bayesbinn-export --out)")
  parser.add_argument("--data-file", required=True,
                      help=".npz with x_test (and y_test) or x (and y), as stored (e.g. uint8)")
  parser.add_argument("--out", default=None, help="write predictions and probabilities (.npz)")
  parser.add_argument("--batch-size", type=int, default=100, help="examples per call")
  args = parser.parse_args(argv)
  if args.batch_size < 1:
    parser.error("--batch-size must be >= 1")
  try:
    if args.out is not None:
      check_output_file(args.out, "predictions file", _is_predictions_file)
    report = predict_file(args.model, args.data_file, args.out, args.batch_size)
  except (ValueError, OSError) as error:
    return _fail("bayesbinn-predict", error)
  line = f"{report['examples']} examples"
  if "accuracy" in report:
    line += f": accuracy {report['accuracy']:.4f}"
  print(line)
  if report["latency_ms_batch_1"] is not None:
    print(f"latency per example: {report['latency_ms_batch_1']:.3f} ms at batch 1, "
          f"{report['latency_ms_per_example']:.4f} ms at batch {report['batch_size']} "
          f"({report['kernel']} kernel)")
  if args.out:
    print(f"wrote {args.out}")
  return 0


def _fail(prog: str, error: BaseException) -> int:
  message = " ".join(str(error).split("\n")[0].split())
  print(f"{prog}: error: {message}", file=sys.stderr)
  return EXIT_USAGE


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m bayesbinn_jax.experiments.export_cli {export,predict} ...``."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] not in ("export", "predict"):
    print("usage: python -m bayesbinn_jax.experiments.export_cli {export,predict} ...",
          file=sys.stderr)
    return EXIT_USAGE
  return (export_main if argv[0] == "export" else predict_main)(argv[1:])


if __name__ == "__main__":
  sys.exit(main())
