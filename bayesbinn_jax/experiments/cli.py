"""``bayesbinn-train``: one command for every experiment of the paper.

Also reachable as ``python -m bayesbinn_jax``. Bad input ends in a one-line
error (exit status 2) before any training, and never touches the results of
an existing output directory. Exit status 3: training diverged (the last good
checkpoint is kept). Exit status 4: an output could not be written (a full
disk, a read-only folder); one line names the file, the last complete
checkpoint and the command that resumes the run, and nothing saved before is
damaged. Exit status 130 / 143: SIGINT / SIGTERM stopped the run at the next step
boundary, where a checkpoint was saved; one line names it and the command that
resumes the run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from typing import NoReturn, Sequence

from bayesbinn_jax._version import __version__
from bayesbinn_jax.experiments.config import build_config, help_text
from bayesbinn_jax.experiments.console import Console
from bayesbinn_jax.experiments.presets import NOT_FROM_THE_PAPER
from bayesbinn_jax.experiments.specs import EXPERIMENTS
from bayesbinn_jax.train import distributed
from bayesbinn_jax.train.hyperparams import OPTIMIZERS, ConfigError

DESCRIPTION = """\
Train a binary neural network with BayesBiNN or a baseline, with the paper's
settings for the chosen experiment and optimizer (printed at start and saved
in OUT/config.json). Outputs in OUT: config.json, metrics.jsonl (one line per
epoch), summary.json, checkpoints/ (every epoch; --resume continues from the
last complete one), and PNG figures (not with --no-figures).
"""

EPILOG = """\
data:
  two-moons      generated (100 points per class, noise 0.1) with a held-out test set
  snelson        --data-file with x_train, y_train, x_test, or the copy shipped in the package
  mnist, permuted-mnist, cifar10, cifar100
                 --data-file F.npz (x_train, y_train, x_test, y_test; uint8 images NHW or
                 NHWC, integer labels, any number of classes), or --data-dir D holding
                 D/train/<class>/ and D/test/<class>/ image files (PNG, JPEG; one size;
                 classes = sorted folder names), or --data-dir D.tar/.tar.gz of those
                 (decoded once and cached in ~/.cache/bayesbinn_jax or
                 $BAYESBINN_JAX_CACHE_DIR), or --data-dir D holding the official MNIST IDX
                 files, or tensorflow-datasets (downloads when online; --data-dir is then
                 its data_dir)

examples:
  bayesbinn-train two-moons
  bayesbinn-train mnist --data-file mnist.npz --epochs 20 --set test_samples=10
  bayesbinn-train permuted-mnist --data-file mnist.npz --cl-prior none --set epochs=5
  bayesbinn-train mnist --optimizer ste --data-dir ~/mnist_idx --out runs/ste --resume

--set keys (from bayesbinn_jax/experiments/config.py; which exist depends on the
experiment and optimizer, an unknown key lists the valid ones, --show-config prints
a run's values; the defaults shown are the hyperparameters' own, the presets set most):
{keys}

evaluate a saved run again (e.g. against new out-of-distribution data, or with more
Monte Carlo networks): bayesbinn-train --evaluate --out OUT --ood-data-file other.npz
--set test_samples=100  writes OUT/evaluation/summary.json and figures.

multi-process: every process runs the same command (the same --out, on a shared file
system for several machines), reads only its rows of each global batch, and process 0
writes the outputs. Under a cluster launcher (SLURM, Open MPI, Cloud TPU) pass
--distributed; by hand, give each process --coordinator HOST:PORT --num-processes N
--process-id I (e.g. two processes on one machine: --coordinator 127.0.0.1:12345).

exit status: 0 done; 2 bad input or options (one line, nothing written); 3 training
diverged (the last good checkpoint is kept); 4 an output could not be written (one line
naming the file, the last complete checkpoint and the command that resumes the run);
130 / 143 stopped by Ctrl-C (SIGINT) / SIGTERM at the next step, saved there (one line naming
the checkpoint and the command that resumes the run; a second signal stops at once).
""".replace("{keys}", help_text())


class _Parser(argparse.ArgumentParser):
  """An ArgumentParser whose errors are one line on stderr (exit status 2), without
  the usage block (``--help`` prints it)."""

  def error(self, message: str) -> NoReturn:
    self.exit(2, f"{self.prog}: error: {_one_line(message)}\n")


def _one_line(message: object) -> str:
  return " ".join(str(message).split())


def build_parser() -> argparse.ArgumentParser:
  parser = _Parser(
      prog="bayesbinn-train", description=DESCRIPTION, epilog=EPILOG,
      formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("experiment", nargs="?", choices=EXPERIMENTS, default="two-moons",
                      help="which experiment of the paper to run (default two-moons)")
  parser.add_argument("--optimizer", choices=OPTIMIZERS, default="bayesbinn",
                      help="bayesbinn (default), ste (STE-Adam), bop, pmf, or adam (full precision)")
  parser.add_argument("--epochs", type=int, default=None,
                      help="epochs (per task for permuted-mnist); default: the paper's")
  parser.add_argument("--seed", type=int, default=0, help="seed of everything random (default 0)")
  parser.add_argument("--data-file", default=None, help="an .npz data file (see below)")
  parser.add_argument("--data-dir", default=None,
                      help="class folders of images (train/<class>/, test/<class>/) or a .tar/.tar.gz "
                           "of them, MNIST IDX files, or a tfds data_dir (see below)")
  parser.add_argument("--allow-unseen-labels", action="store_true",
                      help="accept test labels the training split lacks (noted; refused otherwise)")
  parser.add_argument("--ood-data-file", default=None,
                      help="an .npz of out-of-distribution images of the training images' shape (x_test, "
                           "or x): reports ood_auroc (predictive entropy, OOD positive) and ood_entropy.png")
  parser.add_argument("--out", default=None,
                      help="output directory (default runs/EXPERIMENT-OPTIMIZER-seedS)")
  parser.add_argument("--resume", action="store_true",
                      help="continue the run in --out from its last complete checkpoint")
  parser.add_argument("--evaluate", action="store_true",
                      help="evaluate the last checkpoint of the run in --out again (its experiment, "
                           "optimizer, settings and data from OUT/config.json; --ood-data-file and "
                           "--set test_samples/eval_batch_size may be given): writes OUT/evaluation/")
  parser.add_argument("--cl-prior", choices=("posterior", "none"), default="posterior",
                      help="permuted-mnist with bayesbinn: prior of task k = posterior after task "
                           "k-1 (default), or none (zero prior, every task)")
  parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                      help="override a preset value (repeatable); see the keys below")
  parser.add_argument("--no-figures", dest="figures", action="store_false",
                      help="write no PNG figures (nor the arrays drawn in them): metrics.jsonl, summary.json "
                           "and the TensorBoard logs are written as always; e.g. for sweeps")
  parser.add_argument("--quiet", action="store_true",
                      help="no progress bar (a file or pipe never gets one): evaluation lines and results only")
  parser.add_argument("--malloc", choices=("retain", "default"), default="retain",
                      help="retain (default): keep host memory freed by a step for the next one, "
                           "faster on CPU but the resident memory stays at its peak and can grow "
                           "by fragmentation; default: the C library's own behaviour "
                           "(bayesbinn_jax/train/host_cpu.py)")
  parser.add_argument("--distributed", action="store_true",
                      help="join a multi-process JAX job found by JAX itself (SLURM, Open MPI, Cloud TPU); "
                           "or give --coordinator, --num-processes and --process-id")
  parser.add_argument("--coordinator", default=None, metavar="HOST:PORT",
                      help="address of process 0 of a multi-process job (with --num-processes, --process-id)")
  parser.add_argument("--num-processes", type=int, default=None, metavar="N",
                      help="number of processes of the job")
  parser.add_argument("--process-id", type=int, default=None, metavar="I",
                      help="this process's rank, 0 to N-1 (0 writes the outputs)")
  parser.add_argument("--coordinator-timeout", type=float, default=300.0, metavar="SECONDS",
                      help="how long to wait for the other processes (default 300)")
  parser.add_argument("--shard-state", action="store_true",
                      help="split lambda, the momentum and the sampled weights over the devices along a "
                           "weight axis (ZeRO/FSDP style) instead of replicating them")
  parser.add_argument("--show-config", action="store_true", help="print the config as one JSON line and exit")
  return parser


def _check_paths(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """Exit 2 with one line when a data path given does not exist."""
  for flag, path in (("--data-file", args.data_file), ("--data-dir", args.data_dir),
                     ("--ood-data-file", args.ood_data_file)):
    if path is not None and not os.path.exists(path):
      parser.error(f"{flag} {path}: no such file or directory.")


def _evaluate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
  """``--evaluate``: the run in --out evaluated again (see ``pipeline.evaluate_run``)."""
  if args.out is None:
    parser.error("--evaluate needs --out, the output directory of the run to evaluate.")
  for flag in ("resume", "distributed", "shard_state", "show_config"):
    if getattr(args, flag):
      parser.error(f"--evaluate cannot be combined with --{flag.replace('_', '-')}.")
  if args.epochs is not None or args.coordinator is not None:
    parser.error("--evaluate takes the run's settings from OUT/config.json; drop --epochs/--coordinator.")
  _check_paths(parser, args)
  from bayesbinn_jax.experiments.config import OverrideError, evaluation_config, read_saved_run  # noqa: PLC0415
  from bayesbinn_jax.experiments.options import RunOptions  # noqa: PLC0415
  from bayesbinn_jax.experiments.pipeline import evaluate_run  # noqa: PLC0415

  try:
    saved = read_saved_run(args.out)  # config.json, read once
    options = RunOptions(config=evaluation_config(saved.config, args.overrides), out_dir=args.out,
                         data_file=args.data_file, data_dir=args.data_dir, quiet=args.quiet,
                         ood_data_file=args.ood_data_file, figures=args.figures,
                         allow_unseen_labels=args.allow_unseen_labels)
  except OverrideError as error:
    parser.error(str(error))
  except ValueError as error:
    print(f"bayesbinn-train: error: {render_error(error)}", file=sys.stderr)
    return 2
  try:
    evaluate_run(options, Console(quiet=args.quiet), saved=saved)
  except ValueError as error:  # every error of bad input is one (DataError, RunError, CheckpointError, ...)
    print(f"bayesbinn-train: error: {render_error(error)}", file=sys.stderr)
    return 2
  return 0


def render_error(error: BaseException) -> str:
  """One line for ``error`` in the CLI's terms: the library's message (which names no flag)
  with the flag that sets what it names, and the advice that fits."""
  from bayesbinn_jax.data import UnseenLabelsError  # noqa: PLC0415
  from bayesbinn_jax.train import checkpoint, sharding  # noqa: PLC0415

  message = _one_line(error).rstrip(".")
  if isinstance(error, distributed.DistributedError):
    for name in error.arguments:  # coordinator, num_processes, process_id: the flags that set them
      message = re.sub(rf"(?<![\w-]){name}(?![\w-])", "--" + name.replace("_", "-"), message)
    return message + "."
  if isinstance(error, sharding.BatchSizeError):
    return f"{message} (--set {error.name}=...)."
  if isinstance(error, UnseenLabelsError):
    return f"{message}: pass --allow-unseen-labels to train anyway."
  if isinstance(error, checkpoint.StateMismatchError) and error.release != __version__:
    return f"{message}; evaluate or resume it with bayesbinn_jax {error.release}, or use another --out."
  if isinstance(error, sharding.NothingToSplitError):
    return f"--shard-state: {message}; run without --shard-state."
  for kind, advice in _CHECKPOINT_ADVICE:
    if isinstance(error, getattr(checkpoint, kind, ())):
      return f"{message}; {advice}."
  return message + "."


def _with_override(message: str, error: BaseException, overrides: Sequence[str]) -> str:
  """``message`` led by the ``--set key=value`` that set the setting ``error`` refuses, if any
  (a :class:`ConfigError`'s key, or the setting a message such as "lr must be ..." opens with)."""
  key = error.key if isinstance(error, ConfigError) else message.partition(" ")[0]
  items = [item for item in overrides if item.partition("=")[0].strip() == key]
  return f"--set {items[-1]}: {message}" if items else message


_CHECKPOINT_ADVICE = (
    ("SettingsMismatchError", "resume with the same settings, or use another --out"),
    ("StateMismatchError", "resume with the same data and settings, or use another --out"),
    ("CheckpointError", "use another --out"),
)
"""What to do about each kind of :class:`bayesbinn_jax.train.checkpoint.CheckpointError`."""


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.epochs is not None and args.epochs < 1:
    parser.error(f"--epochs must be >= 1; got {args.epochs}.")
  if not 0 <= args.seed < 2**32:
    parser.error(f"--seed must be in [0, 2**32); got {args.seed}.")
  if args.evaluate:
    return _evaluate(parser, args)
  try:
    config = build_config(args.experiment, args.optimizer, seed=args.seed, epochs=args.epochs,
                          overrides=args.overrides)
    distributed.check_arguments(args.coordinator, args.num_processes, args.process_id)
  except ValueError as error:
    parser.error(_with_override(render_error(error), error, args.overrides))
  out = args.out or os.path.join("runs", f"{args.experiment}-{args.optimizer}-seed{args.seed}")
  ours = args.optimizer in NOT_FROM_THE_PAPER.get(args.experiment, ())
  note = (f"note: the paper gives no {args.optimizer} settings for {args.experiment}; "
          "these presets are ours (bayesbinn_jax/experiments/specs.py).")
  if args.show_config:
    print(json.dumps({"experiment": args.experiment, "optimizer": args.optimizer, "out": out,
                      **config.as_dict()}))
    if ours:
      print(note)
    return 0
  _check_paths(parser, args)
  if args.data_dir is not None and not os.path.isdir(args.data_dir):
    from bayesbinn_jax.data.image_folder import is_tar_source  # noqa: PLC0415

    if not is_tar_source(args.data_dir):
      parser.error(f"--data-dir {args.data_dir}: not a directory, nor a .tar/.tar.gz archive.")

  from bayesbinn_jax.train import host_cpu  # noqa: PLC0415 - keeps --help and argument errors fast

  if args.malloc == "retain":
    host_cpu.retain_freed_memory()  # before JAX's threads allocate: see host_cpu
  from bayesbinn_jax.atomic import OutputWriteError  # noqa: PLC0415
  from bayesbinn_jax.experiments.options import RunOptions  # noqa: PLC0415
  from bayesbinn_jax.experiments.pipeline import run_experiment  # noqa: PLC0415
  from bayesbinn_jax.train.interrupt import Interrupted  # noqa: PLC0415
  from bayesbinn_jax.train.loop import NonFiniteLossError  # noqa: PLC0415

  if args.distributed or args.coordinator is not None:
    try:
      distributed.initialize(args.coordinator, args.num_processes, args.process_id,
                             timeout_s=args.coordinator_timeout)
    except distributed.DistributedError as error:
      print(f"bayesbinn-train: error: {render_error(error)}", file=sys.stderr)
      return 2
  console = Console(quiet=args.quiet) if distributed.is_main_process() else Console.silent()
  console.config(f"{args.experiment} with {args.optimizer}, output in {out}; settings:", config.as_dict())
  if ours:
    console.line(note)
  options = RunOptions(
      config=config, out_dir=out, data_file=args.data_file, data_dir=args.data_dir, resume=args.resume,
      cl_prior=args.cl_prior, quiet=args.quiet, ood_data_file=args.ood_data_file,
      shard_state=args.shard_state, figures=args.figures, allow_unseen_labels=args.allow_unseen_labels)
  try:
    run_experiment(options, console)
  except Interrupted as stopped:  # SIGINT/SIGTERM: stopped at a step boundary, saved there
    print(f"bayesbinn-train: {stopped}; resume: {_resume_command(argv)}", file=sys.stderr)
    return stopped.exit_status
  except KeyboardInterrupt as error:  # a second signal: stopped at once
    print(f"bayesbinn-train: stopped at once by {error or 'SIGINT'}; resume from the last complete checkpoint in "
          f"{os.path.join(out, 'checkpoints')}: {_resume_command(argv)}", file=sys.stderr)
    return 143 if "SIGTERM" in str(error) else 130
  except NonFiniteLossError as error:
    print(f"bayesbinn-train: stopped: {_one_line(error)} The last good checkpoint is in "
          f"{out}/checkpoints.", file=sys.stderr)
    return 3
  except OutputWriteError as error:
    print(f"bayesbinn-train: stopped: {_one_line(error)}. {_resume_hint(out, argv)}", file=sys.stderr)
    return 4
  except ValueError as error:  # every error of bad input is one (DataError, RunError, CheckpointError, ...)
    print(f"bayesbinn-train: error: {render_error(error)}", file=sys.stderr)
    return 2
  return 0


def _resume_command(argv: Sequence[str] | None) -> str:
  """This run's command line with ``--resume``, quoted for a POSIX shell."""
  args = list(sys.argv[1:] if argv is None else argv)
  return shlex.join(["bayesbinn-train", *args, *([] if "--resume" in args else ["--resume"])])


def _resume_hint(out: str, argv: Sequence[str] | None) -> str:
  """Where a run stopped by a failed write can continue from, and the command that does."""
  from bayesbinn_jax.train.checkpoint import Checkpointer  # noqa: PLC0415

  latest = Checkpointer(os.path.join(out, "checkpoints")).latest()
  args = list(sys.argv[1:] if argv is None else argv)
  command = shlex.join(["bayesbinn-train", *args, *([] if "--resume" in args else ["--resume"])])
  if latest is None:
    return f"No checkpoint was complete; free space or fix the folder, then run again: {command}"
  return (f"The last complete checkpoint is epoch {latest} ({os.path.join(out, 'checkpoints', str(latest))}); "
          f"free space or fix the folder, then resume: {command}")


if __name__ == "__main__":
  sys.exit(main())
