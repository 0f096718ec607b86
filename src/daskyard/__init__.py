"""daskyard: distributed machine-learning training with Dask, on Kubernetes and on a laptop."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("daskyard")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0"
