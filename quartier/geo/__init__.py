"""Geo: pure analysis on (Geo)DataFrames (grid cells, coverage classes) and a thin I/O module.

``grid`` and ``coverage`` take and return plain data; only ``io`` talks to PostgreSQL.
"""
