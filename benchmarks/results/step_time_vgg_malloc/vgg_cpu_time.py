import sys, time, resource, argparse
sys.path.insert(0, 'benchmarks'); sys.path.insert(0, '.')
import step_time as st
import jax
args = st.parse_args(['--models', 'vgg', '--optimizers', sys.argv[1], '--vgg-batch', '50'])
spec = st._model_spec('vgg', args, 'cpu')
import numpy as np
rng = np.random.default_rng(0)
batches = [tuple(jax.device_put((rng.standard_normal((50, 32, 32, 3)).astype(np.float32), rng.integers(0, 10, 50).astype(np.int32)))) for _ in range(2)]
case = st.build_case(sys.argv[1], spec, None, batches, 1)
st.run_steps(case, batches, 1, record=False)
def cpu():
  r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
n = int(sys.argv[2]) if len(sys.argv) > 2 else 3
c0, w0 = cpu(), time.perf_counter()
st.run_steps(case, batches, n, record=True)
print(f"{sys.argv[1]} cpu s/step {(cpu()-c0)/n:.2f} wall s/step {(time.perf_counter()-w0)/n:.2f} median wall {np.median(case.times_ms)/1e3:.2f}")
