"""Tests of bayesbinn-export / bayesbinn-predict (bayesbinn_jax/experiments/export_cli.py).

The end-to-end tests train a fully binary MNIST MLP for one epoch on tiny images, export
its mode network and predict: the packed model's test accuracy must equal the run's own
(the mode network, evaluated by the float engine). The refusals are one line on stderr
and exit status 2, with nothing written.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from cli_helpers import write_images

from bayesbinn_jax.experiments import cli, export_cli
from bayesbinn_jax.export import load_packed, save_packed, save_xnor
from bayesbinn_jax.nn import MnistMLP

KEY = jax.random.PRNGKey(0)


def _one_line_error(capsys, prog):
  err = capsys.readouterr().err.strip()
  assert err.startswith(f"{prog}: error: ") and "\n" not in err, err
  return err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
  """One epoch of BayesBiNN on a fully binary MNIST MLP (28x28 uint8 images, 4 classes)."""
  root = tmp_path_factory.mktemp("export")
  data = write_images(root / "tiny.npz", shape=(28, 28), num_train=300, num_test=100)
  out = str(root / "run")
  status = cli.main(["mnist", "--optimizer", "bayesbinn", "--set", "activations=binary",
                     "--set", "epochs=1", "--set", "batch_size=50", "--set", "val_fraction=0.1",
                     "--set", "test_samples=0", "--no-figures", "--quiet", "--data-file", data,
                     "--out", out])
  assert status in (0, None)
  return {"root": root, "data": data, "out": out}


@pytest.mark.slow
def test_export_then_predict_gives_the_runs_accuracy(run, capsys):
  model = str(run["root"] / "model.xnor")
  assert export_cli.export_main([run["out"], "--out", model]) == 0
  printed = capsys.readouterr().out
  assert "BinaryDense_1" in printed and "binary weights 10,002,432" in printed
  assert "mode network" in printed
  preds = str(run["root"] / "preds.npz")
  assert export_cli.predict_main([model, "--data-file", run["data"], "--out", preds]) == 0
  printed = capsys.readouterr().out
  with open(os.path.join(run["out"], "summary.json")) as handle:
    accuracy = json.load(handle)["test_accuracy"]
  assert f"100 examples: accuracy {accuracy:.4f}" in printed
  assert "latency per example:" in printed and "ms at batch 1" in printed
  saved = np.load(preds)
  y = np.load(run["data"])["y_test"]
  assert saved["probabilities"].shape == (100, 4)
  assert np.mean(saved["predictions"] == y) == pytest.approx(accuracy)
  params, _, metadata = load_packed(model)
  assert metadata["preprocessing"] == {"kind": "images", "mean": 0.1307, "std": 0.3081}
  assert metadata["run"]["epoch"] == 1
  assert params["BinaryDense_1"]["kernel"].shape == (2048, 2048)


@pytest.mark.slow
def test_posterior_ensemble_export(run, capsys):
  model = str(run["root"] / "ensemble.xnor")
  assert export_cli.export_main([run["out"], "--out", model, "--samples", "3"]) == 0
  assert "3 posterior samples" in capsys.readouterr().out
  params, _, metadata = load_packed(model)
  assert params["BinaryDense_1"]["kernel"].shape == (3, 2048, 2048)
  assert metadata["xnor"]["num_samples"] == 3
  assert export_cli.predict_main([model, "--data-file", run["data"]]) == 0
  assert "100 examples: accuracy" in capsys.readouterr().out


@pytest.mark.slow
def test_export_refusals(run, tmp_path, capsys):
  assert export_cli.export_main([str(tmp_path), "--out", str(tmp_path / "m.xnor")]) == 2
  assert "holds no config.json" in _one_line_error(capsys, "bayesbinn-export")
  # A run with real activations does not pack: refused before anything is written.
  real = str(tmp_path / "real")
  assert cli.main(["mnist", "--optimizer", "ste", "--set", "epochs=1", "--set", "batch_size=50",
                   "--set", "val_fraction=0.1", "--no-figures", "--quiet",
                   "--data-file", run["data"], "--out", real]) in (0, None)
  capsys.readouterr()
  target = tmp_path / "real.xnor"
  assert export_cli.export_main([real, "--out", str(target)]) == 2
  assert "BinaryDense_1: real-valued inputs" in _one_line_error(capsys, "bayesbinn-export")
  assert not target.exists()
  assert export_cli.export_main([real, "--out", str(target), "--samples", "2"]) == 2
  assert "trained with ste" in _one_line_error(capsys, "bayesbinn-export")


def test_predict_refuses_foreign_files_and_wrong_shapes(tmp_path, capsys):
  model = MnistMLP(num_classes=3, hidden=16, depth=2, activations="binary")
  shapes = jax.eval_shape(lambda: model.init(KEY, np.zeros((1, 784)), train=False))
  rng = np.random.default_rng(0)
  variables = {"params": jax.tree.map(lambda s: rng.choice([-1.0, 1.0], s.shape).astype(np.float32),
                                      shapes["params"]),
               "batch_stats": jax.tree.map(lambda s: np.ones(s.shape, np.float32),
                                           shapes["batch_stats"])}
  path = str(tmp_path / "m.xnor")
  save_xnor(path, model, variables, input_shape=(1, 784))
  data = tmp_path / "x.npz"
  x = rng.integers(0, 256, (5, 784)).astype(np.uint8)
  np.savez(data, x=x, y=np.array([0, 1, 2, 0, 1]))
  assert export_cli.predict_main([path, "--data-file", str(data)]) == 0
  assert "5 examples: accuracy" in capsys.readouterr().out
  np.savez(tmp_path / "wrong.npz", x=np.zeros((5, 28, 27), np.uint8))
  assert export_cli.predict_main([path, "--data-file", str(tmp_path / "wrong.npz")]) == 2
  err = _one_line_error(capsys, "bayesbinn-predict")
  assert "examples of shape (28, 27); the model takes (784,)" in err
  plain = str(tmp_path / "plain.npz")
  save_packed(plain, variables["params"])
  assert export_cli.predict_main([plain, "--data-file", str(data)]) == 2
  assert "not an xnor network file" in _one_line_error(capsys, "bayesbinn-predict")
  (tmp_path / "junk.xnor").write_bytes(b"not a model")
  assert export_cli.predict_main([str(tmp_path / "junk.xnor"), "--data-file", str(data)]) == 2
  assert "junk.xnor: not a packed network file" in _one_line_error(capsys, "bayesbinn-predict")
  assert export_cli.predict_main([path, "--data-file", str(tmp_path / "none.npz")]) == 2
  assert "none.npz: no such file" in _one_line_error(capsys, "bayesbinn-predict")
