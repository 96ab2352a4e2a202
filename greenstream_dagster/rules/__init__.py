"""The rules of DESIGN.md sections 1 to 4, as plain Python and DuckDB SQL (no Dagster)."""
