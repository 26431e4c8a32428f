import runpy, sys  # usage: run.py RETAINED_BLOCK_BYTES OUT.json (from the checkout root)
sys.path.insert(0, "benchmarks")
import bayesbinn_jax.train.host_cpu as h
h.RETAINED_BLOCK_BYTES = int(sys.argv[1])
sys.argv = ["step_time.py", "--models", "vgg", "--vgg-batch", "50", "--optimizers", "bayesbinn_k1,ste",
            "--rounds", "2", "--steps", "3", "--warmup", "4", "--out", sys.argv[2]]
runpy.run_path("benchmarks/step_time.py", run_name="__main__")
