"""Geo: pure analysis on (Geo)DataFrames and thin I/O modules.

Pure: ``grid`` (INSPIRE 100 m grid), ``coverage`` (speed-test cells for the foundation map),
``profiles`` (classification profiles), ``analysis`` (the coverage-gap analysis), ``gaps`` (gap
clusters), ``memory`` (freed memory back to the operating system between steps). I/O: ``io``
(districts, speed tests, sensors), ``coverage_store`` (analysis inputs and results in
PostgreSQL, through ``quartier.store.pgcopy``), ``supply`` (operator files with a column
mapping), ``export`` (GeoPackage, GeoJSON, CSV).
"""
