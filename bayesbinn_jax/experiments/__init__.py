"""The paper's experiments: presets, data and networks, the runner, figures, and the CLI."""
