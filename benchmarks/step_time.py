"""Milliseconds per training step of BayesBiNN and the baselines, measured alternately.

Usage:
  python benchmarks/step_time.py [--quick] [--out benchmarks/results/step_time.json]
  python benchmarks/step_time.py --devices 1,2,4 [--quick]   # data-parallel scaling table
  python benchmarks/step_time.py --devices 1,2,4,8 --shard-state [--quick]   # state split over devices
  python benchmarks/step_time.py --processes 1,2 [--quick]   # N processes, one CPU device each

Every optimizer runs the library's own train step (``build_method`` with the
paper's preset, ``create_train_state``, ``make_train_step``) on random inputs:

* MNIST MLP 784-2048x3-10 (``MnistMLP``), batch 100, 28x28 inputs, preset "mnist";
* CIFAR VGG (``VGGBinaryConnect``), preset "cifar10", batch ``--vgg-batch``
  (the paper's 50 on an accelerator; 10 on CPU by default, where batch 50 takes
  seconds a step: the batch used is printed and saved).

Optimizers: BayesBiNN K=1 and K=5 (``train_samples``), STE-Adam, Bop, PMF and
Adam on real weights, each as the engine runs it (BayesBiNN skips non-finite
steps inside its own update, the others behind ``optax.apply_if_finite``), and
the reference of the ratio column: ``optax.adam`` in the same step without any
guard. Each step function is lowered and compiled first (the
compile time is reported on its own), then run ``--warmup`` times; the timed
steps are taken round-robin: in each of ``--rounds`` rounds every optimizer
runs ``--steps`` steps, in an order rotated from round to round, so that a
noisy machine slows all of them alike and the ratios hold. Each step is timed
to ``jax.block_until_ready`` of the new state and metrics; the table gives the
median and the 10th and 90th percentiles.

Also reported per optimizer: the optimizer state's size in array elements per
network weight (``opt floats/w``; the params the model holds in ``params/w``:
K for BayesBiNN with K samples), and XLA's memory analysis of the compiled
step (deterministic: arguments, outputs, temporaries, aliased (donated)
buffers; ``peak`` is XLA's peak where the backend reports one, else
arguments + outputs + temporaries - aliased).

``--devices N[,N...]`` re-runs this script once per N with
``XLA_FLAGS=--xla_force_host_platform_device_count=N JAX_PLATFORMS=cpu`` and
runs the step data-parallel (``bayesbinn_jax.train.sharding``: the global
batch is split over the N simulated CPU devices, the state replicated), and
reports examples/s per device count, and the relative difference of a checksum
of the final train state from the first count's (the runs take the same
steps from the same seed, so it shows the data-parallel step computes the same
thing). Simulated devices share the host's cores, so the table measures the
sharding overhead, not a real speed-up.

``--shard-state`` splits the train state over the devices instead of
replicating it (``bayesbinn_jax.train.sharding.shard_state``: params and
optimizer state cut along a weight axis, ZeRO/FSDP style). Each device count
then also reports the bytes of train state one device holds
(``state_bytes_per_device``) and XLA's memory analysis of the compiled step,
which for a step over several devices is per device.

``--processes N[,N...]`` runs the same scaling table over N processes of one
simulated CPU device each, joined by ``jax.distributed`` on 127.0.0.1 (gloo
collectives), every process handing over its own rows of each batch; process
0's timings are reported. Compare it with ``--devices`` (N devices in one
process): the difference is the cost of cross-process collectives over TCP.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Sequence

from _output import write_json  # benchmarks/_output.py, which puts the checkout on sys.path

CASES = {
    # key: (optimizer, K, label, XLA compiler options: "engine" or "xla_default"; "passes":
    # the engine's options, and the optimizer's update replaced by optax.set_to_zero)
    "bayesbinn_k1": ("bayesbinn", 1, "BayesBiNN K=1", "engine"),
    "bayesbinn_k5": ("bayesbinn", 5, "BayesBiNN K=5", "engine"),
    "bayesbinn_k5_passes": ("bayesbinn", 5, "K=5 passes only", "passes"),
    "ste": ("ste", 1, "STE-Adam", "engine"),
    "bop": ("bop", 1, "Bop", "engine"),
    "pmf": ("pmf", 1, "PMF", "engine"),
    "adam": ("adam", 1, "Adam (fp32)", "engine"),
    "optax_adam": ("adam", 1, "optax.adam", "xla_default"),
    "optax_adam_engine_opts": ("adam", 1, "optax.adam +opt", "engine"),
}
REFERENCE = "optax_adam"
"""The ratio column's reference: a plain jitted Flax step with ``optax.adam`` (no
non-finite guard) compiled with XLA's default options, the step a JAX user writes
by hand. ``optax_adam_engine_opts`` is the same step compiled with the engine's
options (:func:`bayesbinn_jax.train.host_cpu.compiler_options`). The library's
"adam" case is Adam behind ``optax.apply_if_finite``, as the engine runs every
baseline. ``bayesbinn_k5_passes`` is BayesBiNN K=5's step with a free update
(``optax.set_to_zero``): the five forward and backward passes alone, a lower bound
of any K=5 step."""
MODELS = ("mnist", "vgg")
DEFAULT_OUT = os.path.join("benchmarks", "results", "step_time.json")
DEFAULT_SCALING_OUT = os.path.join("benchmarks", "results", "step_time_scaling.json")
MiB = 1024 * 1024


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description="ms per training step of BayesBiNN and the baselines (alternating rounds).")
  parser.add_argument("--quick", action="store_true",
                      help="MNIST MLP only, no warm-up beyond the first call, 3 rounds of 1 step")
  parser.add_argument("--out", default=None,
                      help=f"JSON results (default {DEFAULT_OUT}; {DEFAULT_SCALING_OUT} with --devices)")
  parser.add_argument("--models", default=None,
                      help="comma list of mnist,vgg (default both; mnist with --quick or --devices)")
  parser.add_argument("--optimizers", default=",".join(CASES),
                      help=f"comma list of {','.join(CASES)}")
  parser.add_argument("--rounds", type=int, default=None, help="round-robin rounds (default 5; 3 quick)")
  parser.add_argument("--steps", type=int, default=None,
                      help="timed steps per optimizer and round (default 4; 1 quick)")
  parser.add_argument("--warmup", type=int, default=None,
                      help="untimed steps after the first call (default 10, enough for the heap to settle; 0 quick)")
  parser.add_argument("--mnist-batch", type=int, default=100, help="MNIST batch (global with --devices)")
  parser.add_argument("--vgg-batch", type=int, default=None,
                      help="CIFAR VGG batch (default 50 on GPU/TPU, 10 on CPU)")
  parser.add_argument("--malloc", choices=("retain", "default"), default="retain",
                      help="retain: keep freed host memory for the next step (bayesbinn_jax.train.host_cpu."
                           "retain_freed_memory, as bayesbinn-train does); default: glibc's own thresholds")
  parser.add_argument("--devices", default=None,
                      help="comma list of simulated CPU device counts, e.g. 1,2,4: scaling table")
  parser.add_argument("--processes", default=None,
                      help="comma list of process counts, e.g. 1,2: scaling table over processes on 127.0.0.1, "
                           "one simulated CPU device each")
  parser.add_argument("--shard-state", action="store_true",
                      help="with --devices or --processes: split params and optimizer state over the devices "
                           "(ZeRO/FSDP style) instead of replicating them")
  parser.add_argument("--scaling-worker", type=int, default=None, help=argparse.SUPPRESS)
  parser.add_argument("--coordinator", default=None, help=argparse.SUPPRESS)
  parser.add_argument("--num-processes", type=int, default=None, help=argparse.SUPPRESS)
  parser.add_argument("--process-id", type=int, default=None, help=argparse.SUPPRESS)
  args = parser.parse_args(argv)
  if args.devices is not None and args.processes is not None:
    parser.error("pass --devices or --processes, not both")
  args.optimizers = _split(args.optimizers, CASES, "--optimizers")
  scaling = args.devices is not None or args.scaling_worker is not None
  default_models = "mnist" if args.quick or scaling else ",".join(MODELS)
  args.models = _split(args.models or default_models, MODELS, "--models")
  args.rounds = args.rounds or (3 if args.quick else 5)
  args.steps = args.steps or (1 if args.quick else 4)
  args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 10)
  args.scale_over = "processes" if args.processes is not None else "devices"
  for flag in ("devices", "processes"):
    text = getattr(args, flag)
    if text is None:
      continue
    try:
      counts = [int(n) for n in text.split(",") if n.strip()]
    except ValueError:
      parser.error(f"--{flag} takes a comma list of integers; got {text!r}")
    if not counts or min(counts) < 1:
      parser.error(f"--{flag} needs counts >= 1")
    setattr(args, flag, counts)
  if args.processes is not None:
    args.devices = args.processes  # the table's counts: one device per process
  if args.shard_state and args.devices is None and args.scaling_worker is None:
    parser.error("--shard-state needs --devices or --processes")
  if args.out is None:
    args.out = DEFAULT_SCALING_OUT if scaling or args.processes is not None else DEFAULT_OUT
  return args


def _split(text: str, known: Any, flag: str) -> list[str]:
  items = [t.strip() for t in text.split(",") if t.strip()]
  unknown = [t for t in items if t not in known]
  if unknown or not items:
    raise SystemExit(f"{flag}: unknown {unknown or text!r}; choose from {', '.join(known)}")
  return items


# --------------------------------------------------------------------------- one optimizer


@dataclasses.dataclass
class Case:
  """One optimizer on one model: its compiled step, state, and the timings so far."""

  key: str
  label: str
  compiled: Callable[..., Any]
  state: Any
  init_s: float
  compile_s: float
  first_call_ms: float
  memory: dict[str, float]
  opt_floats_per_weight: float
  params_floats_per_weight: float
  num_weights: int
  times_ms: list[float] = dataclasses.field(default_factory=list)
  minor_faults: int = 0
  state_bytes_per_device: int = 0
  left_whole: list[str] = dataclasses.field(default_factory=list)


def _model_spec(model: str, args: argparse.Namespace, platform_name: str) -> dict[str, Any]:
  from bayesbinn_jax.nn import MnistMLP, VGGBinaryConnect  # pylint: disable=import-outside-toplevel
  if model == "mnist":
    return dict(title="MNIST MLP 784-2048x3-10", experiment="mnist", make=lambda q: MnistMLP(quantizer=q),
                input_shape=(28, 28), classes=10, batch=args.mnist_batch, train_set_size=54_000)
  batch = args.vgg_batch or (10 if platform_name == "cpu" else 50)
  return dict(title="CIFAR-10 VGGBinaryConnect", experiment="cifar10",
              make=lambda q: VGGBinaryConnect(quantizer=q), input_shape=(32, 32, 3), classes=10,
              batch=batch, train_set_size=45_000)


def _size(tree: Any) -> int:
  import jax  # pylint: disable=import-outside-toplevel
  return sum(int(getattr(leaf, "size", 1)) for leaf in jax.tree.leaves(tree))


def _memory(compiled: Any) -> dict[str, float]:
  """XLA's memory analysis of the compiled step, in MiB."""
  try:
    stats = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except  # not every backend implements it
    stats = None
  if stats is None:
    return {}
  fields = ("argument_size_in_bytes", "output_size_in_bytes", "temp_size_in_bytes",
            "alias_size_in_bytes", "generated_code_size_in_bytes")
  out = {name.replace("_size_in_bytes", "_mib"): getattr(stats, name, 0) / MiB for name in fields}
  peak = getattr(stats, "peak_memory_in_bytes", 0) or 0
  estimate = (stats.argument_size_in_bytes + stats.output_size_in_bytes + stats.temp_size_in_bytes
              - stats.alias_size_in_bytes)
  out["peak_mib"] = estimate / MiB  # live arguments + new outputs + temporaries
  out["xla_peak_mib"] = peak / MiB  # as the backend reports it (CPU: not the temporaries)
  return out


def build_case(key: str, spec: dict[str, Any], mesh: Any, batches: list, num_weights: int,
               shard: bool = False) -> Case:
  """Builds the state and compiles the library's train step for ``key`` on ``spec``'s model
  (with ``shard``: the state split over ``mesh``'s devices, else replicated on them)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.experiments.config import build_config, method_of  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train.engine import create_train_state, make_train_step  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train.keys import purpose_key  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train.methods import learning_rate_schedule  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train.sharding import (  # pylint: disable=import-outside-toplevel
      pin_layout, replicate, shard_state, state_bytes_per_device)

  start = time.perf_counter()
  name, k, label, options = CASES[key]
  config = build_config(spec["experiment"], name)
  if name == "bayesbinn":
    config = config.replace(train_samples=k)
  steps_per_epoch = max(spec["train_set_size"] // spec["batch"], 1)
  method = method_of(config, steps_per_epoch=steps_per_epoch, train_set_size=spec["train_set_size"],
                     key=purpose_key(0, "optimizer"))
  if key.startswith(REFERENCE):
    schedule = learning_rate_schedule(config.hyper, epochs=config.run.epochs, steps_per_epoch=steps_per_epoch)
    method = dataclasses.replace(method, tx=optax.adam(schedule))
  model = spec["make"](method.quantizer)
  sample = jnp.zeros((1,) + spec["input_shape"], jnp.float32)
  # create_train_state is eager (dozens of small dispatches); jit it once per optimizer.
  state = jax.jit(create_train_state, static_argnums=(0, 1, 3))(model, method, sample, 0)
  if options == "passes":
    state = state.replace(tx=optax.set_to_zero(), opt_state=optax.set_to_zero().init(state.params))
  left_whole: list[str] = []
  layout = None
  if mesh is not None and shard:
    state, layout, left_whole = shard_state(mesh, state, num_samples=method.num_samples)
  elif mesh is not None:
    state = replicate(mesh, state)
  jax.block_until_ready(state)
  init_s = time.perf_counter() - start

  compiler_options = {} if options == "xla_default" else None
  step = make_train_step(method, "classification", mc_loop=config.mc_loop,
                         compiler_options=compiler_options)
  if layout is not None:
    step = pin_layout(step, mesh, layout, compiler_options=compiler_options)
  start = time.perf_counter()
  compiled = step.lower(state, *batches[0]).compile()
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  state, metrics = compiled(state, *batches[0])
  jax.block_until_ready((state, metrics))
  first_call_ms = 1e3 * (time.perf_counter() - start)
  return Case(key, label, compiled, state, init_s, compile_s, first_call_ms, _memory(compiled),
              _size(state.opt_state) / num_weights, _size(state.params) / num_weights, num_weights,
              state_bytes_per_device=state_bytes_per_device(state), left_whole=left_whole)


def run_steps(case: Case, batches: list, count: int, record: bool) -> None:
  import jax  # pylint: disable=import-outside-toplevel
  for i in range(count):
    batch = batches[(len(case.times_ms) + i) % len(batches)]
    faults = _minor_faults()
    start = time.perf_counter()
    case.state, metrics = case.compiled(case.state, *batch)
    jax.block_until_ready((case.state, metrics))
    if record:
      case.times_ms.append(1e3 * (time.perf_counter() - start))
      case.minor_faults += _minor_faults() - faults


def _rusage() -> Any:
  """This process's resource usage so far (``resource.getrusage``); None without it."""
  try:
    import resource  # pylint: disable=import-outside-toplevel
  except ImportError:
    return None
  return resource.getrusage(resource.RUSAGE_SELF)


def _max_rss_mib() -> float | None:
  """The process's peak resident memory (every case of the run together), in MiB (Linux units)."""
  usage = _rusage()
  return None if usage is None else usage.ru_maxrss / 1024


def _minor_faults() -> int:
  """Page faults of this process so far (first touches of freshly mapped memory); 0 without getrusage."""
  usage = _rusage()
  return 0 if usage is None else usage.ru_minflt


def benchmark_model(model: str, args: argparse.Namespace, mesh: Any = None) -> tuple[dict, list[Case]]:
  """Compiles every optimizer's step on ``model``, then times them round-robin."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train.sharding import check_batch_size, shard_batch  # pylint: disable=import-outside-toplevel

  spec = _model_spec(model, args, jax.devices()[0].platform)
  if mesh is not None:
    check_batch_size(mesh, spec["batch"], "--mnist-batch" if model == "mnist" else "--vgg-batch")
  rng = np.random.default_rng(0)
  batches = []
  for _ in range(2):
    x = rng.standard_normal((spec["batch"],) + spec["input_shape"]).astype(np.float32)
    y = rng.integers(0, spec["classes"], spec["batch"]).astype(np.int32)
    batches.append(shard_batch(mesh, x, y) if mesh is not None else tuple(jax.device_put((x, y))))

  sample = jax.ShapeDtypeStruct((1,) + spec["input_shape"], np.float32)
  shapes = jax.eval_shape(lambda x: spec["make"]("none").init(jax.random.PRNGKey(0), x, train=False), sample)
  num_weights = _size(shapes["params"])
  print(f"\n{spec['title']}, batch {spec['batch']}: compiling ...", flush=True)
  cases = []
  for key in args.optimizers:
    case = build_case(key, spec, mesh, batches, num_weights, shard=args.shard_state)
    print(f"  {case.label:<15} state {case.init_s:5.1f} s, step compiled in {case.compile_s:5.1f} s, "
          f"first call {case.first_call_ms:8.1f} ms", flush=True)
    cases.append(case)
  for case in cases:
    run_steps(case, batches, args.warmup, record=False)
  for r in range(args.rounds):
    order = cases[r % len(cases):] + cases[:r % len(cases)]
    for case in order:
      run_steps(case, batches, args.steps, record=True)
  return spec, cases


def _checksum(state: Any) -> float:
  """Sum of |x| over every floating-point array of the train state (params,
  optimizer state, statistics), in float64: runs that took the same steps on 1 or
  N devices agree up to the rounding of the sharded reductions (and, for
  BayesBiNN at tau = 1e-10, what that rounding does once N * s * g amplifies it)."""
  import jax  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train.sharding import to_host  # pylint: disable=import-outside-toplevel
  leaves = jax.tree.leaves(to_host((state.params, state.opt_state, state.batch_stats)))
  return float(sum(np.abs(leaf.astype(np.float64)).sum() for leaf in leaves
                   if np.issubdtype(leaf.dtype, np.floating)))


def summarize(spec: dict, cases: list[Case]) -> dict[str, Any]:
  import numpy as np  # pylint: disable=import-outside-toplevel
  by_key = {}
  for case in cases:
    t = np.asarray(case.times_ms)
    by_key[case.key] = dict(
        label=case.label, steps=len(t), median_ms=float(np.median(t)),
        p10_ms=float(np.percentile(t, 10)), p90_ms=float(np.percentile(t, 90)),
        compile_s=case.compile_s, first_call_ms=case.first_call_ms, state_init_s=case.init_s,
        examples_per_s=spec["batch"] / (float(np.median(t)) / 1e3),
        opt_state_floats_per_weight=case.opt_floats_per_weight,
        params_floats_per_weight=case.params_floats_per_weight,
        memory=case.memory, state_checksum=_checksum(case.state),
        minor_faults_per_step=case.minor_faults / max(len(t), 1),
        state_bytes_per_device=case.state_bytes_per_device, state_left_whole=case.left_whole,
        compiler_options="XLA defaults" if CASES[case.key][3] == "xla_default" else "engine")
  reference = by_key.get(REFERENCE)
  for result in by_key.values():
    result["ratio_to_optax_adam"] = result["median_ms"] / reference["median_ms"] if reference else None
  return dict(title=spec["title"], experiment_preset=spec["experiment"], batch=spec["batch"],
              num_weights=cases[0].num_weights if cases else 0, optimizers=by_key)


def print_table(result: dict[str, Any]) -> None:
  print(f"\n{result['title']} ({result['num_weights']:,} binary weights), batch {result['batch']}, "
        f"preset {result['experiment_preset']!r}")
  header = (f"{'optimizer':<15} {'ms/step':>9} {'p10':>8} {'p90':>8} {'x optax':>7} {'compile s':>9} "
            f"{'opt fl/w':>8} {'params/w':>8} {'peak MiB':>9} {'faults/step':>11}")
  print(header)
  print("-" * len(header))
  for r in result["optimizers"].values():
    ratio = f"{r['ratio_to_optax_adam']:.2f}" if r["ratio_to_optax_adam"] is not None else "-"
    peak = f"{r['memory']['peak_mib']:.0f}" if r["memory"] else "-"
    print(f"{r['label']:<15} {r['median_ms']:9.1f} {r['p10_ms']:8.1f} {r['p90_ms']:8.1f} {ratio:>7} "
          f"{r['compile_s']:9.1f} {r['opt_state_floats_per_weight']:8.2f} "
          f"{r['params_floats_per_weight']:8.2f} {peak:>9} {r['minor_faults_per_step']:11.0f}")


def machine_info() -> dict[str, Any]:
  import jax  # pylint: disable=import-outside-toplevel
  import jaxlib  # pylint: disable=import-outside-toplevel
  devices = jax.devices()
  info = dict(jax=jax.__version__, jaxlib=jaxlib.__version__, python=platform.python_version(),
              machine=platform.machine(), processor=platform.processor() or None,
              cpu_count=os.cpu_count(), backend=devices[0].platform,
              device_kind=devices[0].device_kind, device_count=len(devices),
              xla_flags=os.environ.get("XLA_FLAGS"))
  if hasattr(os, "sched_getaffinity"):
    info["cpus_usable"] = len(os.sched_getaffinity(0))
  if hasattr(os, "getloadavg"):
    info["load_average_at_start"] = list(os.getloadavg())
  return info


def _settings(args: argparse.Namespace) -> dict[str, Any]:
  return dict(quick=args.quick, rounds=args.rounds, steps_per_round=args.steps, warmup=args.warmup,
              timed_steps=args.rounds * args.steps, optimizers=args.optimizers, models=args.models,
              inputs="random normal images, random labels; 2 batches alternated",
              malloc=args.malloc, engine_compiler_options=_engine_options())


def _engine_options() -> dict[str, Any]:
  from bayesbinn_jax.train import host_cpu  # pylint: disable=import-outside-toplevel
  return host_cpu.compiler_options()



# --------------------------------------------------------------------------- modes


def run_single(args: argparse.Namespace) -> None:
  start = time.perf_counter()
  info = machine_info()
  print(f"jax {info['jax']} on {info['device_kind']} ({info['backend']}), {info['cpu_count']} CPUs; "
        f"{args.rounds} rounds x {args.steps} steps after {args.warmup} warm-up")
  results = {}
  for model in args.models:
    spec, cases = benchmark_model(model, args)
    results[model] = summarize(spec, cases)
    print_table(results[model])
  if hasattr(os, "getloadavg"):
    info["load_average_at_end"] = list(os.getloadavg())
  info["max_rss_mib"] = _max_rss_mib()
  info["wall_s"] = time.perf_counter() - start
  write_json(args.out, dict(machine=info, settings=_settings(args), results=results))
  print(f"total {info['wall_s']:.0f} s, peak resident memory {info['max_rss_mib']:.0f} MiB")


def run_scaling_worker(args: argparse.Namespace) -> dict[str, Any]:
  """In a process started with N simulated CPU devices: throughput of the data-parallel step."""
  if args.num_processes is not None:
    from bayesbinn_jax.train import distributed  # pylint: disable=import-outside-toplevel
    distributed.initialize(args.coordinator, args.num_processes, args.process_id, timeout_s=120)
  import jax  # pylint: disable=import-outside-toplevel
  from bayesbinn_jax.train.sharding import data_mesh  # pylint: disable=import-outside-toplevel
  if len(jax.devices()) != args.scaling_worker:
    raise SystemExit(f"expected {args.scaling_worker} devices, got {len(jax.devices())}: "
                     "XLA_FLAGS was not applied (jax imported too early?)")
  mesh = data_mesh()
  results = {}
  for model in args.models:
    spec, cases = benchmark_model(model, args, mesh)
    results[model] = summarize(spec, cases)
    print_table(results[model])
  return dict(machine=machine_info(), results=results)


def _worker_env(devices: int) -> dict[str, str]:
  """The environment of a worker process with ``devices`` simulated CPU devices."""
  env = dict(os.environ)
  flags = [f for f in env.get("XLA_FLAGS", "").split() if "xla_force_host_platform_device_count" not in f]
  env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _run_workers(args: argparse.Namespace, n: int, out: str) -> None:
  """Runs the scaling worker over ``n`` devices: one process of n devices, or n processes of one."""
  command = [sys.executable, os.path.abspath(__file__), "--scaling-worker", str(n), "--out", out,
             "--models", ",".join(args.models), "--optimizers", ",".join(args.optimizers),
             "--rounds", str(args.rounds), "--steps", str(args.steps), "--warmup", str(args.warmup),
             "--mnist-batch", str(args.mnist_batch), "--malloc", args.malloc]
  if args.vgg_batch:
    command += ["--vgg-batch", str(args.vgg_batch)]
  if args.shard_state:
    command += ["--shard-state"]
  if args.scale_over == "devices" or n == 1:
    print(f"\n=== {n} simulated CPU device(s), one process ===", flush=True)
    subprocess.run(command, env=_worker_env(n), check=True)
    return
  print(f"\n=== {n} processes on 127.0.0.1, one simulated CPU device each ===", flush=True)
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  workers = [subprocess.Popen(command + ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(n),
                                         "--process-id", str(rank)],
                              env=_worker_env(1), stdout=None if rank == 0 else subprocess.DEVNULL)
             for rank in range(n)]
  codes = [worker.wait() for worker in workers]
  if any(codes):
    raise SystemExit(f"a worker process failed (exit codes {codes})")


def run_scaling(args: argparse.Namespace) -> None:
  """Runs the worker once per device (or process) count; prints examples/s per optimizer and count."""
  start = time.perf_counter()
  runs = {}
  for n in args.devices:
    with tempfile.TemporaryDirectory() as tmp:
      out = os.path.join(tmp, "result.json")
      _run_workers(args, n, out)
      with open(out, encoding="utf-8") as f:
        runs[n] = json.load(f)

  table: dict[str, Any] = {}
  for model in args.models:
    rows = {}
    for key in args.optimizers:
      base = runs[args.devices[0]]["results"][model]["optimizers"][key]["examples_per_s"]
      first_sum = runs[args.devices[0]]["results"][model]["optimizers"][key]["state_checksum"]
      rows[key] = {}
      for n in args.devices:
        result = runs[n]["results"][model]["optimizers"][key]
        rows[key][str(n)] = dict(
            examples_per_s=result["examples_per_s"], median_ms=result["median_ms"],
            speedup=result["examples_per_s"] / base,
            state_checksum_rel_diff=abs(result["state_checksum"] - first_sum) / max(abs(first_sum), 1e-30),
            state_bytes_per_device=result["state_bytes_per_device"],
            xla_peak_mib_per_device=result["memory"].get("peak_mib"))
    table[model] = rows
    first = runs[args.devices[0]]["results"][model]
    where = ("N processes of one simulated CPU device" if args.scale_over == "processes"
             else "N simulated CPU devices")
    layout = "split over the devices" if args.shard_state else "replicated"
    print(f"\nscaling: {first['title']}, global batch {first['batch']} split over {where}, state {layout} "
          f"(examples/s, speed-up vs N={args.devices[0]})")
    header = f"{'optimizer':<14}" + "".join(f"{'N=' + str(n):>18}" for n in args.devices)
    print(header)
    print("-" * len(header))
    for key, row in rows.items():
      cells = "".join(f"{row[str(n)]['examples_per_s']:10.0f} ({row[str(n)]['speedup']:4.2f}x)"
                      for n in args.devices)
      worst = max(row[str(n)]["state_checksum_rel_diff"] for n in args.devices)
      print(f"{CASES[key][2]:<15}{cells}   state vs N={args.devices[0]}: {worst:.1e}")
      memory = "".join(f"{cell['state_bytes_per_device'] / MiB:8.2f} /{cell['xla_peak_mib_per_device'] or 0:7.1f}"
                       for cell in (row[str(n)] for n in args.devices))
      print(f"{'  MiB state/peak':<15}{memory}")
  settings = dict(_settings(args), devices=args.devices, shard_state=args.shard_state, scale_over=args.scale_over)
  payload = dict(machine=runs[args.devices[0]]["machine"], settings=settings,
                 scaling=table, runs={str(n): runs[n] for n in args.devices},
                 note="simulated host devices share the same CPU cores: this measures sharding "
                      "overhead, not a real multi-device speed-up",
                 wall_s=time.perf_counter() - start)
  write_json(args.out, payload)


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  if args.malloc == "retain":
    from bayesbinn_jax.train import host_cpu  # pylint: disable=import-outside-toplevel
    if not host_cpu.retain_freed_memory():
      print("note: not glibc; --malloc retain left the allocator as it is")
  if args.scaling_worker is not None:
    payload = run_scaling_worker(args)
    if args.process_id in (None, 0):  # with several processes, process 0's timings
      with open(args.out, "w", encoding="utf-8") as f:
        json.dump(payload, f)
  elif args.devices is not None:
    run_scaling(args)
  else:
    run_single(args)


if __name__ == "__main__":
  main()
