"""XGBoost on GPUs: what xgboost.dask refuses is refused up front, or named, exit 2.

Measured on an NVIDIA H200 (device tool): device=cuda on one embedded worker trained
(AUC within 0.0001 of the CPU's); on two, XGBoost failed with the error below, and
daskyard exited 1 with a traceback (with these checks, the same machine gave each
refusal as its one line, exit 2). An ordinal (device=cuda:0) is refused by
xgboost.dask itself once training begins, on any machine: exit 1 too.
"""

import pytest
import xgboost

from daskyard.config import (
    XGBOOST_FLAT_KEYS,
    ClusterConfig,
    DataConfig,
    XGBoostConfig,
    XGBoostJobConfig,
    build_config,
)
from daskyard.errors import ConfigError
from daskyard.train.xgboost import _classify_xgboost_error, _is_lost_peer

# As XGBoost 3.2.0 wrote it on the H200, with two workers on its one GPU.
SHARED_GPU = (
    "[17:59:13] /__w/xgboost/xgboost/src/collective/comm.cu:80: Check failed: n_uniques == "
    "root.World() (1 vs. 2) : Multiple processes within communication group running on "
    "same CUDA device is not supported. GPU-ca3eae1a-12ec-9de1-5145-4ef7be5d68ff\n\n"
    "Stack trace:\n  [bt] (0) /tmp/site/xgboost/lib/libxgboost.so(+0x2c1a8c) [0x7fdd9e4c1a8c]\n"
)


def test_two_workers_on_one_gpu_is_a_config_error_and_no_lost_peer():
    error = xgboost.core.XGBoostError(SHARED_GPU)
    classified = _classify_xgboost_error(error)
    assert isinstance(classified, ConfigError)
    assert str(classified).startswith("XGBoost refuses two workers on one GPU")
    assert "\n" not in str(classified)
    assert not _is_lost_peer(error)  # not retried as a lost worker


def job(params: dict, **cluster) -> XGBoostJobConfig:
    return XGBoostJobConfig(
        data=DataConfig(train="data", target="y"),
        output="out",
        cluster=ClusterConfig(**cluster),
        xgboost=XGBoostConfig(params=params),
    )


@pytest.mark.parametrize("device", ["cuda", "gpu", "CUDA"])
def test_a_gpu_with_several_embedded_workers_is_refused(device):
    with pytest.raises(ValueError, match="the embedded workers share one GPU"):
        job({"device": device}, local_workers=2)


@pytest.mark.parametrize(
    ("params", "cluster"),
    [
        ({"device": "cuda"}, {}),  # one embedded worker, every core its threads
        ({"device": "cuda"}, {"local_workers": 1}),
        ({"device": "cuda"}, {"scheduler": "tcp://scheduler:8786"}),  # its workers' GPUs
        ({"device": "cpu"}, {"local_workers": 2}),
    ],
)
def test_what_trains_on_gpus_is_let_through(params, cluster):
    assert job(params, **cluster).xgboost.params == params


def test_a_gpu_ordinal_is_refused_with_the_flag_named():
    with pytest.raises(ConfigError) as refused:
        build_config(
            XGBoostJobConfig,
            config_file=None,
            overrides={
                ("data", "train"): "data",
                ("data", "target"): "y",
                ("output",): "out",
                ("xgboost", "params"): {"device": "cuda:1"},
            },
            flat_keys=XGBOOST_FLAT_KEYS,
            env={},
        )
    assert str(refused.value) == (
        "invalid value for 'xgboost.params' in flag --param: device 'cuda:1' names a GPU: "
        "on Dask each worker trains on the GPU it is given (one per worker); use device=cuda"
    )
