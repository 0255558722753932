"""Composition layer: experiment config, Ray Train / Tune drivers, MLflow tracking, checkpoints and the CLI.

Nothing else in ``seqformer`` imports this package.
"""
