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


def _small_network(rng):
  """A fully binary 3-class MnistMLP (784 inputs) and its variables: +-1 kernels drawn from
  ``rng``, unit BatchNorm statistics."""
  model = MnistMLP(num_classes=3, hidden=16, depth=2, activations="binary")
  shapes = jax.eval_shape(lambda: model.init(KEY, np.zeros((1, 784)), train=False))
  variables = {"params": jax.tree.map(lambda s: rng.choice([-1.0, 1.0], s.shape).astype(np.float32),
                                      shapes["params"]),
               "batch_stats": jax.tree.map(lambda s: np.ones(s.shape, np.float32),
                                           shapes["batch_stats"])}
  return model, variables


def test_predict_refuses_foreign_files_and_wrong_shapes(tmp_path, capsys):
  rng = np.random.default_rng(0)
  model, variables = _small_network(rng)
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


def _small_model_file(tmp_path):
  """A packed 3-class MnistMLP (784 inputs) written by save_xnor, and 5 uint8 examples."""
  rng = np.random.default_rng(1)
  model, variables = _small_network(rng)
  path = str(tmp_path / "m.xnor")
  save_xnor(path, model, variables, input_shape=(1, 784),
            metadata={"stored_input": {"shape": [784], "dtype": "uint8"}})
  return path, rng.integers(0, 256, (5, 784)).astype(np.uint8)


def test_predict_and_export_never_overwrite_a_users_file(tmp_path, capsys):
  # Before: export wrote the model over any --out file (a user's notes.txt became a zip) and
  # predict's np.savez did too; now both refuse it in one line, the file byte for byte intact.
  path, x = _small_model_file(tmp_path)
  data = str(tmp_path / "x.npz")
  np.savez(data, x=x)
  notes = tmp_path / "notes.txt"
  notes.write_text("my notes")
  assert export_cli.predict_main([path, "--data-file", data, "--out", str(notes)]) == 2
  err = _one_line_error(capsys, "bayesbinn-predict")
  assert f"--out {notes}: the file exists and is not a predictions file" in err, err
  assert notes.read_text() == "my notes"
  # export checks --out before it reads the run (this folder holds no run)
  assert export_cli.export_main([str(tmp_path / "no-run"), "--out", str(notes)]) == 2
  assert "the file exists and is not a packed model file" in _one_line_error(capsys, "bayesbinn-export")
  assert notes.read_text() == "my notes"
  # an earlier output of ours may be replaced; a folder or a missing folder is named
  preds = tmp_path / "preds"          # no .npz suffix: written at exactly this path
  for _ in range(2):
    assert export_cli.predict_main([path, "--data-file", data, "--out", str(preds)]) == 0
  capsys.readouterr()
  assert not os.path.exists(str(preds) + ".npz")
  with np.load(preds) as saved:
    assert saved["predictions"].shape == (5,) and saved["probabilities"].shape == (5, 3)
  assert export_cli.predict_main([path, "--data-file", data, "--out", str(tmp_path)]) == 2
  assert "is a directory" in _one_line_error(capsys, "bayesbinn-predict")
  missing = tmp_path / "nope" / "p.npz"
  assert export_cli.predict_main([path, "--data-file", data, "--out", str(missing)]) == 2
  assert f"the folder {tmp_path / 'nope'} does not exist" in _one_line_error(capsys, "bayesbinn-predict")


def test_predict_refuses_labels_dtypes_and_files_it_cannot_use(tmp_path, capsys):
  path, x = _small_model_file(tmp_path)
  bad = str(tmp_path / "labels.npz")
  np.savez(bad, x_test=x, y_test=np.array([0, 1, 7, 2, 0]))   # 7: not one of the 3 classes
  assert export_cli.predict_main([path, "--data-file", bad]) == 2   # was: accuracy printed, exit 0
  assert "y_test holds labels the model cannot predict ([7]" in _one_line_error(capsys, "bayesbinn-predict")
  floats = str(tmp_path / "floats.npz")
  np.savez(floats, x=x.astype(np.float32) / 255)              # /255 twice without the check
  assert export_cli.predict_main([path, "--data-file", floats]) == 2
  assert "examples are float32, but the model was trained on uint8" in _one_line_error(
      capsys, "bayesbinn-predict")
  text = tmp_path / "x.txt"
  text.write_text("hello\n")                                  # numpy read it as a pickle
  assert export_cli.predict_main([path, "--data-file", str(text)]) == 2
  err = _one_line_error(capsys, "bayesbinn-predict")
  assert "not an .npz archive (no zip signature)" in err and "pickle" not in err, err


def test_save_xnor_refuses_a_network_of_ones_own_before_writing(tmp_path):
  # docs/guides/fully_binary.md: the file names the network to rebuild, so only the library's
  # networks are saved; one's own packs with pack_network given input_shape.
  import flax.linen as nn
  from bayesbinn_jax.nn import BatchNorm, BinaryDense, pack_network

  class Mine(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
      x = BatchNorm()(BinaryDense(5)(x), use_running_average=not train)
      return BatchNorm()(BinaryDense(3, input_quantizer="ste_sign")(x), use_running_average=not train)

  model = Mine()
  variables = model.init(KEY, np.zeros((1, 7), np.float32))
  variables = {"params": jax.tree.map(np.sign, variables["params"]),
               "batch_stats": variables["batch_stats"]}
  x = np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32)
  net = pack_network(model, variables, input_shape=(1, 7))
  np.testing.assert_array_equal(np.asarray(net(x)).argmax(-1),
                                np.asarray(model.apply(variables, x)).argmax(-1))
  with pytest.raises(ValueError, match="only the library's networks"):
    save_xnor(tmp_path / "mine.xnor", model, variables, input_shape=(1, 7))
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize("main, argv, words", [
    (export_cli.predict_main, ["m.xnor"], "the following arguments are required: --data-file"),
    (export_cli.predict_main, ["m.xnor", "--data-file", "x.npz", "--batch-size", "0"],
     "--batch-size must be >= 1"),
    (export_cli.export_main, ["run", "--out", "m.xnor", "--samples", "0"], "--samples must be >= 1"),
    (export_cli.export_main, ["run"], "the following arguments are required: --out"),
])
def test_usage_errors_are_one_line(main, argv, words, capsys):
  # Before: argparse's usage block (3 lines) came first, as bayesbinn-train avoids.
  with pytest.raises(SystemExit) as exit_info:
    main(argv)
  assert exit_info.value.code == 2
  prog = "bayesbinn-predict" if main is export_cli.predict_main else "bayesbinn-export"
  assert _one_line_error(capsys, prog) == f"{prog}: error: {words}"
