"""The version table that guards client, scheduler and workers running one image."""

from daskyard.cluster import VersionReport


def test_matching_versions_are_not_reported():
    report = VersionReport([("dask", "1.0", "1.0", "1.0")])
    assert report.mismatched == []


def test_a_worker_on_another_version_is_a_mismatch_and_is_flagged_in_the_table():
    report = VersionReport(
        [("dask", "1.0", "1.0", "1.0"), ("xgboost", "3.2.0", "3.2.0", "3.1.0, 3.2.0")]
    )
    assert report.mismatched == ["xgboost"]
    lines = report.table().splitlines()
    assert lines[0].split() == ["package", "client", "scheduler", "workers"]
    assert lines[2].endswith("<- mismatch") and not lines[1].endswith("<- mismatch")


def test_no_workers_is_not_a_mismatch():
    assert VersionReport([("numpy", "2.4.6", "2.4.6", "-")]).mismatched == []
