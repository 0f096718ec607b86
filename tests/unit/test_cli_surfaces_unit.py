"""What a run writes when the disk refuses, the demo's data, and render job's refusals of
configs that cannot run in a Job's pod."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import yaml

from daskyard import demo
from daskyard.artifacts import check_folder_url, check_output_owner, write_bytes_atomic
from daskyard.errors import ConfigError, InfrastructureError
from daskyard.render import render_job

# ---------------------------------------------------------------- writes


@pytest.mark.parametrize(
    ("code", "error", "text"),
    [
        (errno.ENOSPC, InfrastructureError, "No space left on device"),
        (errno.EROFS, ConfigError, "Read-only file system"),
        (errno.EACCES, ConfigError, "Permission denied"),
    ],
)
def test_a_refused_write_is_one_line_with_its_exit_code(tmp_path, monkeypatch, code, error, text):
    """On a worker, a bare OSError read as a lost worker: three attempts, then exit 75."""
    target = tmp_path / "ckpt" / "step-000010.ubj"
    write_bytes_atomic(str(target), b"good")

    def refuse(*args, **kwargs):
        raise OSError(code, "refused")

    monkeypatch.setattr("os.fsync", refuse)
    with pytest.raises(error) as info:
        write_bytes_atomic(str(target), b"new")
    assert str(info.value).startswith(f"cannot write '{target}': {text}")
    assert target.read_bytes() == b"good"
    assert [p.name for p in target.parent.iterdir()] == ["step-000010.ubj"]


def test_a_folder_that_cannot_be_written_is_refused_up_front(tmp_path, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(ConfigError) as info:
        check_folder_url(str(tmp_path / "out"), "output")
    assert str(info.value) == (
        f"output '{tmp_path / 'out'}' cannot be written (it would be created in "
        f"'{tmp_path}'): Read-only file system: choose a folder this job may write to"
    )


# ---------------------------------------------------------------- demo


def test_an_interrupted_demo_leaves_no_data_folder_for_the_next_one(tmp_path, monkeypatch):
    """The next demo trusted a data folder that existed: half its files, or none."""

    def interrupted(folder: Path, rows: int) -> Path:
        (folder / "part-000.parquet").write_bytes(b"PAR1")
        raise KeyboardInterrupt

    monkeypatch.setattr(demo, "generate_classification", interrupted)
    with pytest.raises(KeyboardInterrupt):
        demo.run_demo(str(tmp_path), 1_000, None)
    assert list(tmp_path.iterdir()) == []


def test_demo_expands_a_tilde_in_its_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "run_xgboost", lambda config, stream=None: None)
    monkeypatch.setattr(demo, "generate_classification", lambda folder, rows: folder)
    demo.run_demo("~/demo", 1_000, None)
    assert (tmp_path / "demo" / "data-1000").is_dir()
    assert not (tmp_path / "~").exists()


# ---------------------------------------------------------------- render job


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


S3 = "data: {train: s3://b/train/, target: label}\noutput: s3://b/out/\n"


def test_a_scheduler_in_the_config_that_would_replace_the_jobs_is_refused(tmp_path):
    """The config's scheduler wins over the Job's DASK_SCHEDULER_ADDRESS: a laptop's
    localhost made the pod exit 75 until its backoffLimit."""
    file = config(tmp_path, S3 + "cluster: {scheduler: 'tcp://localhost:8786'}\n")
    with pytest.raises(ConfigError) as info:
        render_job("xgboost", file)
    assert str(info.value).startswith(
        f"config file '{file}': cluster.scheduler 'tcp://localhost:8786' would replace the "
        "scheduler the Job dials (tcp://daskyard-default-scheduler:8786"
    )


def test_the_jobs_own_scheduler_in_the_config_still_renders(tmp_path):
    address = "tcp://daskyard-default-scheduler.ml.svc.cluster.local:8786"
    file = config(tmp_path, S3 + f"cluster: {{scheduler: '{address}'}}\n")
    _, job = yaml.safe_load_all(render_job("xgboost", file, namespace="ml"))
    assert job["kind"] == "Job"


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("data: {train: data/train/, target: label}\noutput: s3://b/out/\n", "data.train"),
        (
            "data: {train: s3://b/t/, validation: file:///tmp/v/, target: label}\n"
            "output: s3://b/out/\n",
            "data.validation",
        ),
        ("data: {train: s3://b/t/, target: label}\noutput: runs/x\n", "output"),
        (S3 + "checkpoints: /tmp/ckpt\n", "checkpoints"),
    ],
)
def test_a_local_path_in_a_rendered_config_is_refused(tmp_path, text, key):
    with pytest.raises(ConfigError, match=rf"{key} '[^']*' is a local path"):
        render_job("xgboost", config(tmp_path, text))


def test_an_empty_image_is_refused_rather_than_replaced_by_the_default(tmp_path):
    with pytest.raises(ConfigError, match="--image '' is not an image reference"):
        render_job("xgboost", config(tmp_path, S3), image="")


def test_a_config_with_non_ascii_text_stays_a_readable_block(tmp_path):
    text = S3 + "# le modèle du café ☃\n"
    rendered = render_job("xgboost", config(tmp_path, text))
    assert "  config.yaml: |\n" in rendered
    assert "# le modèle du café ☃" in rendered
    config_map, _ = yaml.safe_load_all(rendered)
    assert config_map["data"]["config.yaml"] == text


# ---------------------------------------------------------------- another run's output


def _manifest(folder: Path, config: dict, kind: str = "xgboost") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"run_id": "xgb-1", "kind": kind, "config": config})
    (folder / "manifest.json").write_text(text)


def test_a_setting_only_one_daskyard_version_has_does_not_make_another_run(tmp_path):
    """A retried pod on an upgraded image (a new setting, or a retired one) resumes."""
    old = {"data": {"train": "s3://b/d/", "seed": 0}, "xgboost": {"rounds": 4, "retired": 1}}
    _manifest(tmp_path / "out", old)
    new = {"data": {"train": "s3://b/d", "seed": 0, "added": True}, "xgboost": {"rounds": 4}}
    check_output_owner(str(tmp_path / "out"), "xgboost", new)
    with pytest.raises(ConfigError, match=r"its data\.seed is 0, this job's 1"):
        check_output_owner(str(tmp_path / "out"), "xgboost", {**new, "data": {"seed": 1}})
