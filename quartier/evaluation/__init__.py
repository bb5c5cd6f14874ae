"""Evaluation of the city's digitalisation strategy: indicator catalogue and math (pure), the
strategy model (YAML), progress and trend math (pure), stored values and runs, and the report.

See docs/evaluation.md for the indicators' rules, the status rules and the file formats.
"""
