"""Geo: pure analysis on (Geo)DataFrames and thin I/O modules.

Pure: ``grid`` (INSPIRE 100 m grid, cell ids), ``speedtest_cells`` (speed-test cells for the
foundation map), ``profiles`` (classification profiles), ``analysis`` (the coverage-gap analysis,
the ``mobile_mask`` layout), ``gaps`` (gap clusters), ``memory`` (freed memory back to the
operating system between steps). I/O: ``io`` (districts, speed tests, sensors), ``input_store``
(analysis inputs in PostgreSQL, through ``quartier.store.pgcopy``), ``run_store`` (analysis runs
stored and read back), ``features`` (a run's cells, gaps and districts as GeoJSON features for
the API), ``service`` (``analyse_and_store`` and the assembly of analysis parameters),
``supply`` (operator files with a column mapping), ``export`` (GeoPackage, GeoJSON, CSV).
"""
