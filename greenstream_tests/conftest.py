import warnings
from collections.abc import Iterator

import duckdb
import pytest

from greenstream_dagster.settings import Settings
from greenstream_dagster.storage import warehouse

warnings.filterwarnings("ignore", module="dagster")


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    """An empty in-memory warehouse with every table."""
    with warehouse.connect(":memory:") as connection:
        yield connection


@pytest.fixture
def settings(tmp_path) -> Settings:
    """Default settings with the data home in a temporary folder."""
    return Settings(home=tmp_path / "home")
