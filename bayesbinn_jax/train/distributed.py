"""Joining a multi-process JAX job (``jax.distributed``): checked arguments and a bounded wait.

Every process of a multi-controller job runs the same program; after
:func:`initialize`, ``jax.devices()`` lists the devices of every process and a
computation over a mesh of them runs on all processes at once (each process
drives its own devices, its "addressable" ones). Process 0 also hosts the
coordinator service at ``HOST:PORT``, which the others reach over TCP.

On a CPU backend the cross-process collectives (the gradient all-reduce of
data parallelism) go through gloo over TCP
(``jax_cpu_collectives_implementation="gloo"``), so several processes on one
machine (or CPU hosts of a cluster) form one job; GPUs and TPUs use their own
collectives (NCCL, ICI).
"""

from __future__ import annotations

import socket
import time

import jax

DEFAULT_TIMEOUT_S = 300.0
"""Seconds to wait for every process to reach the coordinator (JAX's own default)."""


class DistributedError(ValueError):
  """The process could not join the job: bad arguments or an unreachable coordinator.

  ``arguments`` names the arguments of :func:`initialize` the message is about
  (``coordinator``, ``num_processes``, ``process_id``), as written in it.
  """

  def __init__(self, message: str, arguments: tuple[str, ...] = ()):
    super().__init__(message)
    self.arguments = arguments


def parse_address(address: str) -> tuple[str, int]:
  """Splits a coordinator address ``HOST:PORT`` (``[IPv6]:PORT`` too) into host and port.

  Raises:
    DistributedError: unless ``address`` is ``HOST:PORT`` with a port in [1, 65535].
  """
  host, sep, port = str(address).rpartition(":")
  host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
  if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
    raise DistributedError(
        f"coordinator {address!r} must be HOST:PORT with a port in [1, 65535], "
        "e.g. 10.0.0.1:1234 (the address of process 0).", ("coordinator",))
  return host, int(port)


def check_arguments(coordinator: str | None, num_processes: int | None, process_id: int | None) -> None:
  """Checks the explicit arguments of :func:`initialize`.

  Raises:
    DistributedError: when some but not all three are given, when
      ``num_processes < 1``, when ``process_id`` is not in ``[0, num_processes)``,
      or when ``coordinator`` is not ``HOST:PORT``.
  """
  given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
  missing = [name for name, value in given.items() if value is None]
  if missing and len(missing) < len(given):
    raise DistributedError(
        f"{', '.join(missing)} missing: pass coordinator, num_processes and process_id together, "
        "or none of them to let JAX detect the cluster (SLURM, Open MPI, TPU pods).", tuple(given))
  if missing:
    return
  if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
    raise DistributedError(f"num_processes must be an integer >= 1; got {num_processes!r}.", ("num_processes",))
  if isinstance(process_id, bool) or not isinstance(process_id, int) or not 0 <= process_id < num_processes:
    raise DistributedError(
        f"process_id must be an integer in [0, {num_processes}) for num_processes {num_processes}; "
        f"got {process_id!r}.", ("process_id", "num_processes"))
  assert coordinator is not None  # all three are given
  parse_address(coordinator)


def initialize(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> None:
  """Joins this process to a multi-process JAX job; call before any other JAX call.

  With all three of ``coordinator``, ``num_processes`` and ``process_id``,
  the job is described explicitly (process 0 hosts the coordinator service
  on ``coordinator``'s port); with none, ``jax.distributed.initialize`` detects
  them from the cluster launcher's environment (SLURM, Open MPI, TPU pods,
  ``JAX_COORDINATOR_ADDRESS``...). On a CPU backend, cross-process
  collectives are set to gloo.

  Args:
    coordinator: ``HOST:PORT`` of process 0's coordinator service, or None.
    num_processes: number of processes in the job (>= 1), or None.
    process_id: this process's rank in ``[0, num_processes)``, or None.
    timeout_s: seconds to wait for the coordinator and every process
      (rounded up to whole seconds, at least 1).

  Before JAX's own connection, a process other than 0 waits up to
  ``timeout_s`` for the coordinator's port to accept a TCP connection, and
  process 0 checks that the port is free: JAX's client ends the process with
  a fatal log and a stack trace in both cases. Once connected, JAX itself
  waits up to ``timeout_s`` for every process to register; a process that
  never comes still ends the others that way (JAX gives no hook to catch
  it), after ``timeout_s``, not in a hang.

  Raises:
    DistributedError: bad arguments (:func:`check_arguments`), a non-positive
      timeout, a second call, a coordinator not reached within ``timeout_s``
      or a coordinator port already taken on process 0 (one line each,
      naming the address), or JAX's own refusal (a backend already started).
  """
  check_arguments(coordinator, num_processes, process_id)
  if not timeout_s > 0:
    raise DistributedError(f"timeout_s must be > 0 seconds; got {timeout_s!r}.")
  if jax.distributed.is_initialized():
    raise DistributedError("jax.distributed is already initialized in this process; initialize once.")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")  # used by the CPU backend only
  seconds = max(1, int(-(-timeout_s // 1)))
  if coordinator is not None:
    host, port = parse_address(coordinator)
    if process_id == 0:
      _check_port_free(port)
    else:
      _wait_for_coordinator(host, port, timeout_s)
  try:
    jax.distributed.initialize(
        coordinator_address=coordinator, num_processes=num_processes, process_id=process_id,
        initialization_timeout=seconds)
  except (RuntimeError, ValueError, TypeError) as error:  # XlaRuntimeError is a RuntimeError
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    raise DistributedError(
        f"could not join the distributed job (process {process_id} of {num_processes}): {first}") from error


def _check_port_free(port: int) -> None:
  """Raises DistributedError when process 0 cannot serve on ``port`` (JAX would abort)."""
  with socket.socket(socket.AF_INET6 if socket.has_ipv6 else socket.AF_INET) as probe:
    try:
      probe.bind(("::" if socket.has_ipv6 else "", port))
    except OSError as error:
      raise DistributedError(
          f"the coordinator's port {port} is not free on process 0 ({error.strerror}); pick another port."
      ) from error


def _wait_for_coordinator(host: str, port: int, timeout_s: float) -> None:
  """Returns once a TCP connection to ``host:port`` opens; retries until ``timeout_s``.

  JAX's own client aborts the process (a fatal log and a stack trace) when the
  coordinator stays silent; this wait turns that case into one line.

  Raises:
    DistributedError: no coordinator accepted a connection within ``timeout_s`` seconds.
  """
  deadline = time.monotonic() + timeout_s
  while True:
    left = deadline - time.monotonic()
    try:
      with socket.create_connection((host, port), timeout=max(min(left, 1.0), 0.01)):
        return
    except OSError as error:
      if time.monotonic() + 0.1 >= deadline:
        raise DistributedError(
            f"no coordinator answered at {host}:{port} within {timeout_s:g} s "
            f"({error.strerror or error}); start process 0 there first, or check the address."
        ) from error
      time.sleep(0.1)


def process_count() -> int:
  """Number of processes in the job (1 without :func:`initialize`)."""
  return jax.process_count()


def is_main_process() -> bool:
  """True on process 0, the one that writes the run's config, metrics, summary and figures."""
  return jax.process_index() == 0
