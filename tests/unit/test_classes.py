"""Which classes an incremental classifier is told about (train.incremental.model_classes)."""

from __future__ import annotations

import io

import pytest

from daskyard.errors import DataError
from daskyard.train.incremental import FirstPass, model_classes


def found(training, validation=None) -> FirstPass:
    return FirstPass({"train": 10, "validation": 5}, training, validation, None)


def test_labels_of_training_and_validation_files_are_the_classes():
    out = io.StringIO()
    assert model_classes(found((0, 1, 2), (0, 2)), None, "y", out) == (0, 1, 2)
    assert out.getvalue() == ""


def test_a_validation_label_training_never_holds_is_kept_and_reported():
    out = io.StringIO()
    assert model_classes(found(("no", "yes"), ("maybe", "no")), None, "y", out) == (
        "maybe", "no", "yes",
    )  # fmt: skip
    assert "warning: validation labels ['maybe'] of 'y' never occur in the training" in (
        out.getvalue()
    )


def test_declared_classes_win_and_may_name_labels_the_data_lacks():
    assert model_classes(found((1, 0), (0,)), [0, 1, 2], "y", None) == (0, 1, 2)


@pytest.mark.parametrize(("training", "validation"), [((0, 1, 2), None), ((0, 1), (0, 1, 2))])
def test_a_label_the_declared_classes_leave_out_is_refused(training, validation):
    with pytest.raises(DataError, match=r"'y' holds \[2\], which incremental.classes \[0, 1\]"):
        model_classes(found(training, validation), [0, 1], "y", None)


def test_the_refusal_names_the_key_the_job_declared_them_under():
    with pytest.raises(DataError, match=r"search.classes \[0\] leaves out: add them to search"):
        model_classes(found((0, 1)), [0], "y", None, "search.classes")
