"""Evaluation: indicator catalogue and indicator math (pure), plus the I/O that feeds it."""
