"""The paper's experiments: one spec each, the run pipeline, its console and report, figures, the CLI."""
