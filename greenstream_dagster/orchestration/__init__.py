"""The Dagster layer: assets, checks, sensor, resources and definitions. Thin by design: the
work happens in ``pipeline.py`` and ``rules/``."""
