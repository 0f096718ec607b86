"""The chart fixtures (helm template output) are what the container tests run."""

from tests.charts.conftest import chart_dir, renderer  # noqa: F401  (fixtures)
