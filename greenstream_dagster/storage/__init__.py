"""Where data lives: the raw zone (landed files), the DuckDB warehouse, the Parquet archive."""
