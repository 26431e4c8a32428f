"""What a run prints: readable config, data line, one bar on a terminal, none in a file."""

from __future__ import annotations

import io
import json
import os

from bayesbinn_jax.experiments.cli import main
from bayesbinn_jax.experiments.console import Console


class _Terminal(io.StringIO):
  def isatty(self) -> bool:
    return True


def test_the_main_job_printed_to_a_pipe_is_short_and_has_no_carriage_returns(tmp_path, capsys):
  # The main job's shape: 30 evaluations (3000 epochs, eval_every 100), here 300 epochs.
  out = str(tmp_path / "run")
  assert main(["two-moons", "--out", out, "--epochs", "300", "--set", "eval_every=10",
               "--set", "test_samples=10"]) == 0
  printed = capsys.readouterr().out
  lines = printed.splitlines()
  assert "\r" not in printed
  assert len(lines) <= 60, printed
  assert lines[0].startswith("two-moons with bayesbinn, output in ")
  assert any(line.startswith("data: 200 train, 200 test; inputs 2 float32; 2 classes") for line in lines)
  evaluations = [line for line in lines if line.startswith("epoch ")]
  assert len(evaluations) == 30 and evaluations[-1].startswith("epoch 300/300")
  assert "results:" in lines
  summary = json.load(open(os.path.join(out, "summary.json")))
  table = dict(line.split() for line in lines[lines.index("results:") + 1:-1])
  assert float(table["mc_test_accuracy"]) == round(summary["mc_test_accuracy"], 4)
  assert lines[-1].startswith(f"outputs in {out}: ") and "summary.json" in lines[-1]
  # The config is readable lines of key=value, and config.json records the data's shapes.
  assert "  epochs=300 " in printed and "lr_milestones=[1500,2500]" in printed
  saved = json.load(open(os.path.join(out, "config.json")))
  assert saved["data"] == {"input_shape": [2], "num_train": 200, "num_test": 200, "num_outputs": 2,
                           "num_classes": 2, "num_val": 0, "dtype": "float32"}


def test_a_terminal_gets_one_bar_for_the_whole_run_with_lines_above_it():
  stream = _Terminal()
  console = Console(stream=stream)
  with console.progress(total_steps=50) as bar:
    for step in range(50):
      bar.update()
      if step == 24:
        console.line("halfway")
    assert bar.n == 50
  text = stream.getvalue()
  assert "\r" in text and "\rhalfway\n" in text  # the line is written above the bar
  assert text.count(" 0/50 ") == 1 and "25/50" in text  # one bar, redrawn after the line


def test_quiet_or_a_file_shows_no_bar():
  assert Console(stream=io.StringIO()).show_bar is False
  assert Console(stream=_Terminal(), quiet=True).show_bar is False
  with Console(stream=_Terminal(), quiet=True).progress(10) as bar:
    assert bar is None


def test_a_silent_console_prints_nothing_and_shows_no_bar(capsys):
  console = Console.silent()
  console.line("not for stdout")
  console.config("header", {"lr": 1e-3})
  with console.progress(5) as bar:
    assert bar is None
  assert capsys.readouterr() == ("", "")
  assert console.show_bar is False


def test_an_epoch_shorter_than_a_tenth_of_a_second_prints_milliseconds():
  # A two moons epoch is one step: every line read "(0.0s)" before.
  stream = io.StringIO()
  console = Console(stream=stream)
  for seconds in (0.0143, 2.345):
    console.evaluation({"epoch": 1, "seconds": seconds, "train_loss": 0.5}, 3)
  assert [line.split(":")[0] for line in stream.getvalue().splitlines()] == [
      "epoch 1/3 (14ms)", "epoch 1/3 (2.3s)"]
