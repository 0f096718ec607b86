"""Resolve ``--estimator`` dotted paths safely, before any work is done.

Only scikit-learn-compatible estimator classes with ``partial_fit`` from an
allow-list of packages are accepted: a path naming an arbitrary callable
(``os.system``) or module is refused with exit code 2.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from sklearn.base import BaseEstimator, is_classifier, is_regressor

from daskyard.errors import ConfigError

DEFAULT_ALLOWED_PACKAGES = ("sklearn",)


def resolve_estimator(path: str, allowed_packages: tuple[str, ...] | list[str]) -> type:
    """The estimator class named by ``package.module.Class``, checked."""
    module_name, _, class_name = path.rpartition(".")
    if not module_name or not class_name:
        raise ConfigError(
            f"--estimator '{path}' is not a dotted path like sklearn.linear_model.SGDClassifier"
        )
    package = module_name.split(".", 1)[0]
    if package not in allowed_packages:
        raise ConfigError(
            f"--estimator '{path}': package '{package}' is not allowed; allowed: "
            f"{', '.join(allowed_packages)} (extend incremental.allowed_packages to add one)"
        )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"--estimator '{path}': cannot import '{module_name}' ({exc})") from None
    candidate = getattr(module, class_name, None)
    if candidate is None:
        raise ConfigError(f"--estimator '{path}': '{module_name}' has no '{class_name}'")
    if not (inspect.isclass(candidate) and issubclass(candidate, BaseEstimator)):
        raise ConfigError(
            f"--estimator '{path}' is not a scikit-learn estimator class: name one such as "
            "sklearn.linear_model.SGDClassifier"
        )
    if not hasattr(candidate, "partial_fit"):
        raise ConfigError(
            f"--estimator '{path}' has no partial_fit, so it cannot train incrementally: use "
            "e.g. SGDClassifier, SGDRegressor, MLPClassifier, MultinomialNB, Perceptron"
        )
    if not (is_classifier(candidate()) or is_regressor(candidate())):
        raise ConfigError(f"--estimator '{path}' is neither a classifier nor a regressor")
    return candidate


def build_estimator(cls: type, params: dict[str, Any], path: str, *, seed: int) -> BaseEstimator:
    """An instance with ``params``; unknown names are refused with the valid ones listed.

    An estimator with a ``random_state`` the params leave out gets ``seed`` (the
    job's ``data.seed``), as Spark ML seeds its estimators by default: scikit-learn's
    None draws from the global generator, and SGD's ``partial_fit`` shuffles every
    block with it, so the same job gave a different model each run (accuracy
    0.979 to 0.989 over three runs of one config) and a resumed run could not
    repeat the interrupted one. An explicit ``random_state`` (null included) wins.
    """
    known = cls().get_params(deep=False)
    unknown = sorted(set(params) - set(known))
    if unknown:
        import difflib

        hint = difflib.get_close_matches(unknown[0], list(known), n=1)
        more = f"; did you mean '{hint[0]}'?" if hint else f"; valid: {', '.join(sorted(known))}"
        raise ConfigError(f"--param '{unknown[0]}' is not a parameter of {path}{more}")
    if "random_state" in known and "random_state" not in params:
        params = {**params, "random_state": seed}
    estimator = cls(**params)
    try:
        # scikit-learn validates parameter values at fit time; do it now, before any work.
        estimator._validate_params()
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"invalid parameter for {path}: {str(exc).splitlines()[0]}") from None
    return estimator


def is_linear_model(estimator: BaseEstimator) -> bool:
    """Linear models are sensitive to feature scale: scaling is on by default for them."""
    module = type(estimator).__module__
    return module.startswith(("sklearn.linear_model", "sklearn.neural_network"))
