"""Which workers an XGBoost job on GPUs (``device`` cuda or gpu) trains on.

Its rows go to the workers that declare a GPU (``dask worker --resources GPU=1``,
as the chart's GPU worker group does), and XGBoost trains where the rows are. The
CPU workers beside them would otherwise train too. Workers that declare none are
each asked whether XGBoost sees a GPU there:

- all of them do: the job trains on them all;
- some do and some do not: exit 2. On such a mix XGBoost failed mid-training
  (seen on an H200: "base_score must be in (0,1) for the logistic loss");
- none do: exit 2. XGBoost would train on the CPU, warning only in each
  worker's log.
"""

from __future__ import annotations

import json
from typing import Any

from distributed import Client

from daskyard.config import on_gpu
from daskyard.data import workers_declaring
from daskyard.errors import ConfigError

GPU_RESOURCE = "GPU"


def gpu_placement(client: Client, params: dict[str, Any]) -> tuple[str | None, int]:
    """The resource to place the rows by (or None: any worker) and how many GPU
    workers train; ``(None, 0)`` for a job on CPUs."""
    if not on_gpu(params):
        return None, 0
    declared = workers_declaring(client, GPU_RESOURCE)
    if declared:
        return GPU_RESOURCE, len(declared)
    sees = client.run(sees_gpu)
    blind = sorted(address for address, seen in sees.items() if not seen)
    if not blind:
        return None, len(sees)
    device = params["device"]
    if len(blind) == len(sees):
        raise ConfigError(
            f"device {device}, and no worker sees a GPU (XGBoost would train on the CPU): "
            f"drop --param device={device}, or run the job on GPU workers"
        )
    raise ConfigError(
        f"device {device}: {len(blind)} of {len(sees)} workers see no GPU "
        f"({', '.join(blind[:3])}{', ...' if len(blind) > 3 else ''}), and XGBoost fails on "
        "such a mix: start the GPU workers with --resources GPU=1 (the chart's GPU worker "
        "group does), and the job trains on those"
    )


def sees_gpu() -> bool:
    """On a worker: whether XGBoost trains on a GPU there (else it falls back to the CPU)."""
    import numpy as np
    import xgboost

    with xgboost.config_context(verbosity=0):  # its fallback warning is this answer
        matrix = xgboost.DMatrix(np.zeros((2, 1), dtype=np.float32), label=[0.0, 1.0])
        booster = xgboost.train({"device": "cuda", "tree_method": "hist"}, matrix, 1)
    # What it trained on: "cuda:0" on a GPU, "cpu" where it fell back.
    device = json.loads(booster.save_config())["learner"]["generic_param"]["device"]
    return str(device).startswith("cuda")
