-- The coverage analysis on Dask reads each tile's inputs in the worker that analyses it
-- (issue #16; quartier/geo/distributed.py, `StoreTiles`): a range of cells
-- `cell_n >= n0 and cell_n < n1 and cell_e >= e0 and cell_e < e1` per input table. Without an
-- index every tile scans the whole table. (cell_n, cell_e): a tile is one range of cell rows,
-- filtered on cell_e inside the index; the same index gives the run's row extent (min/max
-- cell_n) at once. Ingest pays one more index entry per row of these tables.
create index if not exists household_cell_idx on household (cell_n, cell_e);
create index if not exists broadband_offer_cell_idx on broadband_offer (cell_n, cell_e);
create index if not exists speedtest_cell_idx on speedtest (cell_n, cell_e);
create index if not exists mobile_measurement_cell_idx on mobile_measurement (cell_n, cell_e);
