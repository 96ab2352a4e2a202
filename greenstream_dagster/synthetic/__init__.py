"""Synthetic head-end exports with known defects, behind ``greenstream generate``.

Plain Python (numpy and pyarrow, no Dagster): ``generate`` writes a day's CSV exports per
collector, the ground truth of every injected defect and a summary. See ``generator.py``.
"""

from greenstream_dagster.synthetic.generator import GenerationResult, generate

__all__ = ["GenerationResult", "generate"]
