"""GreenStream Energy smart-meter pipeline.

The package is split by concern so a reader can find each one from the folder names:

- ``rules/``: the contract (DESIGN.md) as plain functions and SQL; no Dagster import.
- ``storage/``: where data lives: the raw zone, the DuckDB warehouse, the Parquet archive.
- ``orchestration/``: the thin Dagster layer: assets, checks, sensor, resources, definitions.
- ``synthetic/``: the generator of realistic meter files with known defects.
- ``cli.py``: the ``greenstream`` command.
"""
