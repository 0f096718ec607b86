"""Every benchmark runs in smoke mode through the real runner and reports sane figures.

Targets are not asserted (tiny data on a shared machine says nothing about them):
these tests keep the harness from rotting, so that ``make bench`` works when run.
"""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.runner import BENCHMARKS, main

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    output = root / "results.json"
    code = main(["--smoke", "--output", str(output), "--cache", str(root / "cache")])
    payload = json.loads(output.read_text())
    return code, payload, root


def test_runner_exits_zero_and_writes_every_benchmark(smoke_run):
    code, payload, _ = smoke_run
    assert code == 0
    assert [r["name"] for r in payload["results"]] == list(BENCHMARKS)
    assert payload["run"]["smoke"] is True
    assert payload["run"]["machine"]["cores"] >= 1


def test_scratch_space_is_cleaned_up(smoke_run):
    _, _, root = smoke_run
    assert not any((root / "cache" / "tmp").iterdir())


@pytest.mark.parametrize("name", list(BENCHMARKS))
def test_result_is_complete_and_sane(smoke_run, name):
    _, payload, _ = smoke_run
    result = next(r for r in payload["results"] if r["name"] == name)
    assert result["error"] is None
    assert result["smoke"] is True
    assert result["checks"], "a benchmark reports at least one check"
    for check in result["checks"]:
        assert math.isfinite(check["value"]), check
        assert check["passed"] in (True, False, None)
        if check["unit"] == "x":
            assert check["value"] > 0, check
        for raw in (check["measured"], check["baseline"]):
            assert raw is None or (math.isfinite(raw) and raw >= 0), check
    assert result["timings"] and all(math.isfinite(t) and t > 0 for t in result["timings"].values())
    for score in result["scores"].values():
        assert 0.5 <= score <= 1.0, result["scores"]  # AUC or accuracy better than chance
    assert result["wall_seconds"] > 0
