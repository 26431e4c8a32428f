"""The training engine: one jitted step for every optimizer, evaluation, metrics, checkpoints."""
