"""The typed run config (experiments/config.py, train/hyperparams.py): built and checked in
one place, written with a schema version, runs of earlier releases migrated or refused."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import zlib

import jax
import pytest
from cli_helpers import read_summary

from bayesbinn_jax.experiments import config as cfg
from bayesbinn_jax.experiments.cli import EPILOG, main
from bayesbinn_jax.experiments.presets import preset
from bayesbinn_jax.experiments.specs import EXPERIMENTS
from bayesbinn_jax.train import hyperparams
from bayesbinn_jax.train.methods import build_method


# ----------------------------------------------------------------------------- building and checking
def test_the_preset_and_the_overrides_become_typed_values():
  config = cfg.build_config("two-moons", "bayesbinn", seed=7, epochs=12,
                            overrides=["lr=0.5", "lr_milestones=3,9", "augment=yes", "train_samples=2"])
  assert isinstance(config.hyper, hyperparams.BayesBiNNHyper) and isinstance(config.run, cfg.RunSettings)
  assert config.seed == 7 and config.run.epochs == 12 and config.run.augment is True
  assert config.hyper.lr == 0.5 and config.hyper.lr_milestones == (3, 9) and config.hyper.train_samples == 2
  assert config.hyper.temperature == preset("two-moons", "bayesbinn")["temperature"]  # the rest: the preset
  assert config.run.max_nonfinite_steps == 20 and config.run.num_tasks is None  # defaults of the fields
  with pytest.raises(dataclasses.FrozenInstanceError):
    config.hyper.lr = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("changes, key, accepted", [
    ({"momentum": 1.0}, "momentum", "in [0, 1)"),
    ({"lr": 0.0}, "lr", "> 0"),
    ({"lr": float("nan")}, "lr", "a finite number"),
    ({"test_samples": -1}, "test_samples", ">= 0"),
    ({"train_samples": 2.0}, "train_samples", "an integer"),
    ({"train_samples": True}, "train_samples", "an integer"),
    ({"epochs": 2**31}, "epochs", "below 2**31 in magnitude"),
    ({"generator": "mt19937"}, "generator", "one of counter, threefry"),
    ({"activation_quantizer": "none"}, "activation_quantizer", "one of ste_sign, approx_sign"),
    ({"lr_milestones": [1.5]}, "lr_milestones", "epoch numbers (integers >= 0)"),
    ({"augment": "yes"}, "augment", "true or false"),
    ({"seed": -1}, "seed", "in [0, 2**32)"),
])
def test_a_bad_value_is_one_line_naming_the_key_the_value_and_the_range(changes, key, accepted):
  with pytest.raises(hyperparams.ConfigError) as raised:
    cfg.build_config("two-moons", "bayesbinn").replace(**changes)
  error = raised.value
  assert isinstance(error, ValueError) and (error.key, error.accepted) == (key, accepted)
  assert str(error) == f"{key} must be {accepted}; got {error.value!r}." and "\n" not in str(error)


def test_every_preset_is_valid_and_every_key_is_settable_once():
  for experiment in EXPERIMENTS:
    for optimizer in hyperparams.OPTIMIZERS:
      config = cfg.build_config(experiment, optimizer)
      flat = config.as_dict()
      # config.json's mapping reads back as the same config (nothing written that cannot be read).
      assert cfg.from_mapping(experiment, optimizer, json.loads(json.dumps(flat))) == config
      run_keys = {f.name for f in dataclasses.fields(cfg.RunSettings)}
      hyper_keys = {f.name for f in dataclasses.fields(type(config.hyper))}
      assert not run_keys & hyper_keys  # one flat namespace: no key names two settings
      assert set(preset(experiment, optimizer)) <= run_keys | hyper_keys


def test_unknown_renamed_and_malformed_overrides():
  for item, message in (("no_such_key=1", "--set no_such_key: unknown key for this experiment and optimizer"),
                        ("rng=threefry", "--set rng: renamed; use --set generator=threefry."),
                        ("lr", "--set takes key=value; got 'lr'."),
                        ("lr=abc", "--set lr='abc': expected a number (default 0.0001)."),
                        ("num_tasks=3", "--set num_tasks: unknown key")):  # mnist is not continual
    with pytest.raises(cfg.OverrideError, match=item.partition("=")[0]) as raised:
      cfg.build_config("mnist", "bayesbinn", overrides=[item])
    assert message in str(raised.value)


def test_help_lists_every_field_of_every_class_with_its_doc():
  # A key added to a dataclass shows up in --help without a second list to keep by hand.
  for cls in (cfg.RunSettings, *hyperparams.HYPERPARAMS.values()):
    for field in dataclasses.fields(cls):
      assert field.metadata["doc"] and f"{field.name} (" in EPILOG, field.name
  assert "temperature (float > 0, default 1e-10)" in EPILOG
  assert "mc_loop (vmap|unroll" in EPILOG and "momentum (float in [0, 1)" in EPILOG
  assert "lr_decay (float > 0):" in EPILOG  # 0.1 for the schedules, 0.2 for pmf: no single default


def test_build_method_takes_the_typed_hyperparameters():
  config = cfg.build_config("two-moons", "bop")
  method = cfg.method_of(config, steps_per_epoch=1, train_set_size=10, key=jax.random.key(0))
  assert method.name == "bop"
  with pytest.raises(ValueError, match="optimizer must be one of bayesbinn, ste, bop, pmf, adam"):
    build_method(preset("two-moons", "bop"), epochs=1, steps_per_epoch=1, train_set_size=10,
                 key=jax.random.key(0))


def test_an_evaluation_may_change_only_the_evaluation_keys():
  trained = cfg.build_config("mnist", "bayesbinn")
  evaluated = cfg.evaluation_config(trained, ["test_samples=9", "eval_batch_size=50"])
  assert (evaluated.test_samples, evaluated.run.eval_batch_size) == (9, 50)
  cfg.check_evaluation(trained, evaluated)
  with pytest.raises(cfg.EvaluationChangeError, match="got lr") as raised:
    cfg.check_evaluation(trained, trained.replace(lr=0.5))
  assert raised.value.changed == ("lr",)
  with pytest.raises(cfg.OverrideError, match="--set lr=0.5 changes the trained run; only test_samples"):
    cfg.evaluation_config(trained, ["lr=0.5"])


# ----------------------------------------------------------------------------- runs of earlier releases
# What release 0.1.0 wrote (benchmarks/results/two-moons-bayesbinn/config.json): no schema_version,
# rng for generator, none of the settings added since.
_V010_TWO_MOONS = {
    "config": {"augment": False, "batch_size": 200, "checkpoint_every": 500, "cl_prior": None, "epochs": 3000,
               "eval_batch_size": 1000, "eval_every": 100, "kl_weight": 1.0, "lambda_init": 15.0,
               "lambda_init_std": 0.0, "lr": 0.001, "lr_decay": 0.1, "lr_end": 1e-16,
               "lr_milestones": [1500, 2500], "lr_schedule": "steps", "max_nonfinite_steps": 20,
               "momentum": 0.99, "rng": "counter", "seed": 0, "temperature": 1.0, "test_samples": 100,
               "train_samples": 5, "train_set_scale": 1, "train_subset": 0, "val_fraction": 0.0},
    "data_dir": None, "data_file": None, "devices": 1, "experiment": "two-moons", "optimizer": "bayesbinn",
    "version": "0.1.0"}


def test_a_config_of_release_0_1_0_migrates_to_todays_preset(tmp_path):
  (tmp_path / "config.json").write_text(json.dumps(_V010_TWO_MOONS))
  saved = cfg.read_saved_run(str(tmp_path))
  assert saved.release == "0.1.0" and saved.raw["schema_version"] == cfg.SCHEMA_VERSION
  assert saved.config == cfg.build_config("two-moons", "bayesbinn")  # the same meaning, today's names
  # A later 0.1.0 file wrote activation_quantizer as None where the network had its default.
  later = dict(_V010_TWO_MOONS, config={**_V010_TWO_MOONS["config"], "activation_quantizer": None})
  assert cfg.migrate(later, "x")["config"]["activation_quantizer"] == "ste_sign"


@pytest.mark.parametrize("change, problem", [
    (lambda c: c.pop("rng"), "noise drawn before the generator setting existed"),
    (lambda c: c.update(width=3), "settings this release does not know (width)"),
    (lambda c: c.update(momentum=2.0), "momentum must be in [0, 1)"),
])
def test_a_config_of_release_0_1_0_that_cannot_be_migrated_is_refused_naming_the_release(tmp_path, change,
                                                                                          problem):
  saved = json.loads(json.dumps(_V010_TWO_MOONS))
  change(saved["config"])
  (tmp_path / "config.json").write_text(json.dumps(saved))
  with pytest.raises(cfg.SavedRunError) as raised:
    cfg.read_saved_run(str(tmp_path))
  assert raised.value.release == "0.1.0" and "(written by bayesbinn_jax 0.1.0)" in str(raised.value)
  assert problem in str(raised.value) and "\n" not in str(raised.value)


def test_a_newer_schema_is_refused():
  with pytest.raises(cfg.SavedRunError, match="schema_version 2, newer than this release's"):
    cfg.migrate({**_V010_TWO_MOONS, "schema_version": 2, "version": "9.0"}, "config.json")


# ----------------------------------------------------------------------------- end to end, through the CLI
_RUN = ["two-moons", "--set", "epochs=2", "--set", "test_samples=2", "--set", "eval_every=1",
        "--set", "checkpoint_every=1", "--quiet", "--no-figures"]


def _as_release_0_1_0(out, *, drop_generator=False, old_state=False):
  """Rewrites the run in ``out`` as release 0.1.0 wrote it: config.json and every checkpoint's
  metadata without schema_version, rng for generator, no setting added since (the checkpoints'
  CRC lists follow). ``drop_generator``: a run from before the generator setting; ``old_state``:
  a checkpoint listing an array today's train state lacks (0.1.0's ``nonfinite_streak``)."""
  def rewrite(saved):
    saved.pop("schema_version")
    saved["version"] = "0.1.0"
    config = saved["config"]
    generator = config.pop("generator")
    if not drop_generator:
      config["rng"] = generator
    for key in ("activations", "param_dtype", "output_scale", "output_scale_lr", "mc_loop"):
      config.pop(key)
    config["activation_quantizer"] = None
    if old_state and "arrays" in saved:
      saved["arrays"]["nonfinite_streak"] = [[], "int32"]
    return saved

  path = os.path.join(out, "config.json")
  with open(path) as handle:
    saved = rewrite(json.load(handle))
  with open(path, "w") as handle:
    json.dump(saved, handle)
  checkpoints = os.path.join(out, "checkpoints")
  for name in os.listdir(checkpoints):
    meta = os.path.join(checkpoints, name, "meta", "metadata")
    if not os.path.exists(meta):
      continue
    with open(meta) as handle:
      text = json.dumps(rewrite(json.load(handle)))
    with open(meta, "w") as handle:
      handle.write(text)
    crcs_path = os.path.join(checkpoints, name, "file_crcs.json")
    with open(crcs_path) as handle:
      crcs = json.load(handle)
    crcs["meta/metadata"] = zlib.crc32(text.encode())
    with open(crcs_path, "w") as handle:
      json.dump(crcs, handle)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
  out = str(tmp_path_factory.mktemp("saved") / "run")
  assert main([*_RUN, "--out", out]) == 0
  return out


@pytest.mark.slow
def test_a_run_saved_by_release_0_1_0_is_evaluated_and_resumed(trained_run, tmp_path, capsys):
  old = str(tmp_path / "old")
  shutil.copytree(trained_run, old)
  _as_release_0_1_0(old)
  capsys.readouterr()
  assert main(["--evaluate", "--out", old, "--quiet", "--no-figures"]) == 0
  evaluation, run = read_summary(os.path.join(old, "evaluation")), read_summary(trained_run)
  assert evaluation["evaluated_epoch"] == 2 and evaluation["test_accuracy"] == run["test_accuracy"]
  assert main([*_RUN, "--out", old, "--resume"]) == 0  # nothing left to train: the summary again
  assert read_summary(old)["test_accuracy"] == run["test_accuracy"]
  assert "error" not in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("damage, words", [
    (dict(drop_generator=True), "(written by bayesbinn_jax 0.1.0) trained BayesBiNN with noise drawn before"),
    (dict(old_state=True), "(written by bayesbinn_jax 0.1.0, whose train state differs"),
])
def test_a_run_of_release_0_1_0_that_cannot_be_migrated_is_one_line(trained_run, tmp_path, capsys, damage,
                                                                    words):
  old = str(tmp_path / "old")
  shutil.copytree(trained_run, old)
  _as_release_0_1_0(old, **damage)
  for argv in (["--evaluate", "--out", old, "--quiet"], [*_RUN, "--out", old, "--resume"]):
    capsys.readouterr()
    assert main(argv) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert words in line and line.startswith("bayesbinn-train: error: "), line
  assert not os.path.exists(os.path.join(old, "evaluation"))


def test_a_saved_run_that_is_missing_or_not_a_run_says_which(tmp_path):
  # --evaluate / bayesbinn-export of a mistyped folder said it "holds no config.json".
  with pytest.raises(cfg.SavedRunError, match=r"^\S*nope does not exist: pass the output directory of a run\.$"):
    cfg.read_saved_run(str(tmp_path / "nope"))
  with pytest.raises(cfg.SavedRunError, match=r"holds no config.json: pass the output directory"):
    cfg.read_saved_run(str(tmp_path))
