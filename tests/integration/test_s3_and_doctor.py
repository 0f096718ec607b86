"""Object storage round trip (moto S3 on loopback) and ``daskyard doctor``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from daskyard.cluster import SCHEDULER_HTTP_ROUTES
from tests.conftest import (
    classification_frame,
    free_port,
    run_cli,
    start_process_cluster,
    stop_processes,
    write_config,
    write_files,
)

pytestmark = pytest.mark.integration


def s3_xgboost_job(s3_server, tmp_path, name: str, checkpoint_every: int) -> tuple[str, Path]:
    """3 Parquet files uploaded to the moto bucket, and a 25-round XGBoost job config
    that reads them and writes its run under ``s3://BUCKET/runs/NAME``."""
    fs = s3_server.filesystem()
    local = write_files(classification_frame(10_000), tmp_path / "train", files=3)
    prefix = f"{s3_server.bucket}/datasets/{name}"
    fs.put(str(local) + "/", prefix + "/", recursive=True)
    output = f"s3://{s3_server.bucket}/runs/{name}"
    config = write_config(
        tmp_path / "job.yaml",
        {
            "data": {"train": f"s3://{prefix}/", "target": "label"},
            "output": output,
            "storage_options": s3_server.storage_options,
            "xgboost": {
                "rounds": 25,
                "checkpoint_every": checkpoint_every,
                "params": {"objective": "binary:logistic"},
            },
        },
    )
    return output, config


def test_s3_data_in_artifacts_and_checkpoints_out(dask_cluster, s3_server, tmp_path):
    fs = s3_server.filesystem()
    output, config = s3_xgboost_job(s3_server, tmp_path, "demo", checkpoint_every=10)
    result = run_cli(
        "train", "xgboost", "--config", str(config), "--scheduler", dask_cluster.address
    )
    assert result.returncode == 0, result.stderr
    run = output.removeprefix("s3://")
    assert {p.rsplit("/", 1)[1] for p in fs.ls(run)} == {
        "checkpoints",
        "manifest.json",
        "metrics.json",
        "model.ubj",
    }
    metrics = json.loads(fs.cat(f"{run}/metrics.json"))
    assert metrics["validation"]["auc"] > 0.8
    manifest = json.loads(fs.cat(f"{run}/manifest.json"))
    assert manifest["data"]["sources"][0]["files"] == 3
    assert set(manifest["config"]["storage_options"].values()) == {"***"}  # no secrets kept
    steps = fs.glob(f"{run}/checkpoints/*/step-*.ubj")
    assert [s.rsplit("/", 1)[1] for s in steps] == ["step-000010.ubj", "step-000020.ubj"]

    # A retried pod finds the run finished, from the data's listing and the outputs on
    # S3: it never dials its scheduler (none listens there), so nothing is trained.
    again = run_cli("train", "xgboost", "--config", str(config), "--scheduler", "tcp://127.0.0.1:9")
    assert again.returncode == 0, again.stderr
    assert f"run {manifest['run_id']} finished already" in again.stdout


def test_doctor_reports_versions_workers_and_autoscaler_api(dask_cluster):
    result = run_cli("doctor", "--scheduler", dask_cluster.address)
    assert result.returncode == 0, result.stderr
    assert "workers: 2" in result.stdout
    assert "memory_limit=2.00 GiB" in result.stdout
    for package in ("python", "dask", "distributed", "xgboost", "scikit-learn", "numpy", "pandas"):
        assert f"\n{package} " in result.stdout
    assert "mismatch" not in result.stdout
    assert "autoscaler API: served" in result.stdout


def test_doctor_fails_when_the_scheduler_lacks_the_autoscaler_api(tmp_path):
    routes = [r for r in SCHEDULER_HTTP_ROUTES if r != "distributed.http.scheduler.api"]
    cluster = start_process_cluster(tmp_path, n_workers=1, routes=routes)
    try:
        result = run_cli("doctor", "--scheduler", cluster.address)
    finally:
        stop_processes(cluster.processes)
    assert result.returncode == 2
    assert "autoscaler API: NOT served" in result.stdout
    assert "DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES" in result.first_error_line


def test_worker_on_another_version_stops_the_job_with_a_table(small_dataset, tmp_path):
    """A worker whose environment reports another xgboost, as from an older image."""
    fake = tmp_path / "other-image"
    (fake / "xgboost-0.0.1.dist-info").mkdir(parents=True)
    (fake / "xgboost-0.0.1.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: xgboost\nVersion: 0.0.1\n"
    )
    cluster = start_process_cluster(
        tmp_path / "logs", n_workers=1, worker_env={"PYTHONPATH": str(fake)}
    )
    try:
        train = run_cli(
            "train",
            "xgboost",
            "--train",
            str(small_dataset),
            "--target",
            "label",
            "--output",
            str(tmp_path / "o"),
            "--scheduler",
            cluster.address,
        )
        doctor = run_cli("doctor", "--scheduler", cluster.address)
    finally:
        stop_processes(cluster.processes)
    assert train.returncode == 2, train.stderr
    assert train.first_error_line.startswith(
        "daskyard: error: package versions differ between client, scheduler and workers (xgboost)"
    )
    table = train.stderr.split("\n", 1)[1]
    assert "xgboost" in table and "0.0.1" in table and "<- mismatch" in table
    assert not (tmp_path / "o").exists()
    assert doctor.returncode == 2
    assert "0.0.1  <- mismatch" in doctor.stdout


def test_s3_resume_trusts_only_checkpoints_matching_their_manifest(
    dask_cluster, s3_server, tmp_path
):
    """A job killed mid-write or bytes altered later: the rerun skips them, says so,
    and resumes from the newest checkpoint that matches its sha256."""
    fs = s3_server.filesystem()
    output, config = s3_xgboost_job(s3_server, tmp_path, "resume", checkpoint_every=5)
    args = ("train", "xgboost", "--config", str(config), "--scheduler", dask_cluster.address)
    assert run_cli(*args).returncode == 0
    run = output.removeprefix("s3://")
    (folder,) = fs.glob(f"{run}/checkpoints/*")
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(folder)) == [
        "step-000015.ubj",
        "step-000015.ubj.manifest.json",
        "step-000020.ubj",
        "step-000020.ubj.manifest.json",
    ]
    # Round 20's bytes replaced by another valid booster: it loads, but is not what was saved.
    fs.pipe(f"{folder}/step-000020.ubj", fs.cat(f"{folder}/step-000015.ubj"))
    # A later checkpoint whose writer died before its manifest.
    fs.pipe(f"{folder}/step-000024.ubj", fs.cat(f"{folder}/step-000015.ubj")[:100])
    for name in ("model.ubj", "metrics.json", "manifest.json"):
        fs.rm(f"{run}/{name}")

    rerun = run_cli(*args)
    assert rerun.returncode == 0, rerun.stderr
    assert "ignoring checkpoint at step 24: step-000024.ubj has no manifest" in rerun.stdout
    assert (
        "ignoring checkpoint at step 20: step-000020.ubj does not match the sha256 in its manifest"
        in rerun.stdout
    )
    assert "from checkpoint at round 15" in rerun.stdout
    manifest = json.loads(fs.cat(f"{run}/manifest.json"))
    assert manifest["training"]["resumed_from_round"] == 15
    assert manifest["training"]["rounds"] == 25
    assert (
        manifest["files"]["model.ubj"]["sha256"]
        == hashlib.sha256(fs.cat(f"{run}/model.ubj")).hexdigest()
    )


def test_a_listing_sees_checkpoints_another_process_wrote(s3_server):
    """Workers write the checkpoints; s3fs caches listings per filesystem instance, so
    the job's process resumed from a stale listing (and started over after a loss)."""
    import s3fs

    from daskyard.checkpoints import CheckpointStore

    store = CheckpointStore(f"s3://{s3_server.bucket}/stale/run", "ubj", s3_server.storage_options)
    store.save(1, b"first")  # lists the folder to prune it: the listing is now cached
    assert store.steps() == [1]
    worker = s3fs.S3FileSystem(**s3_server.storage_options, skip_instance_cache=True)
    worker.pipe(f"{s3_server.bucket}/stale/run/step-000002.ubj", b"second")
    assert store.steps() == [1, 2]


@pytest.mark.parametrize("key", ["output", "checkpoints"])
def test_an_output_bucket_that_does_not_exist_is_refused_before_any_work(s3_server, tmp_path, key):
    """It failed at the first checkpoint as lost workers, exit 75: retried for ever."""
    _, config = s3_xgboost_job(s3_server, tmp_path, f"nobucket-{key}", checkpoint_every=5)
    payload = yaml.safe_load(config.read_text())
    payload[key] = "s3://no-such-bucket/run"
    write_config(config, payload)
    result = run_cli("train", "xgboost", "--config", str(config), "--local-workers", "1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(
        f"daskyard: error: {key} 's3://no-such-bucket/run' cannot be written (FileNotFoundError"
    )
    assert "create the bucket or fix the URL" in result.first_error_line
    assert "cluster:" not in result.stdout  # before the cluster, before any training


def test_an_unreachable_object_store_is_a_transient_failure(s3_server, tmp_path):
    """botocore's connection errors are no OSError: they ended as exit 1 with a traceback."""
    _, config = s3_xgboost_job(s3_server, tmp_path, "unreachable", checkpoint_every=5)
    payload = yaml.safe_load(config.read_text())
    closed = f"http://127.0.0.1:{free_port()}"
    payload["storage_options"]["client_kwargs"]["endpoint_url"] = closed
    payload["output"] = str(tmp_path / "out")  # the data is what cannot be reached
    write_config(config, payload)
    result = run_cli("train", "xgboost", "--config", str(config), "--local-workers", "1")
    assert result.returncode == 75, result.stderr
    assert result.stderr.startswith("daskyard: error: cannot list data at 's3://")
    assert "the store cannot be reached (EndpointConnectionError" in result.first_error_line
    assert "Traceback" not in result.stderr

    payload["output"] = f"s3://{s3_server.bucket}/runs/unreachable"
    write_config(config, payload)
    result = run_cli("train", "xgboost", "--config", str(config), "--local-workers", "1")
    assert result.returncode == 75, result.stderr
    assert (
        f"output 's3://{s3_server.bucket}/runs/unreachable' cannot be written: the store cannot "
        "be reached (EndpointConnectionError" in result.first_error_line
    )
