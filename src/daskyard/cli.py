"""The ``daskyard`` command line: flags only.

Parses arguments into overrides, builds the validated config, and maps every
error to the contract's exit code (DESIGN.md). It knows nothing of training.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import re
import sys
import traceback
from collections.abc import Callable, Sequence
from typing import Any

from daskyard import __version__
from daskyard.errors import ConfigError, DaskyardError
from daskyard.imports import hide_scikit_learn_from_xgboost
from daskyard.interrupts import let_go, never_swallowed

EXIT_CODES_HELP = """exit codes:
  0   success
  1   unexpected error (retried by the Job)
  2   invalid configuration or arguments (not retried)
  3   invalid input data (not retried)
  75  transient infrastructure failure, e.g. scheduler unreachable (retried; resumes)
"""


class Parser(argparse.ArgumentParser):
    """argparse with a 'did you mean' for mistyped flags and commands, and one-line errors.

    The error line comes first (``daskyard: error: ...``), the usage after it; a flag a
    command does not know is reported by that command, with a hint from its own flags.
    """

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if args is None:
            args = sys.argv[1:]
        args = list(args)
        if self._subcommands() is not None:
            self._check_leading_options(args)
        namespace, extras = super().parse_known_args(args, namespace)
        if extras and "handler" in self._defaults:  # a command: its strays are its own
            self.error(f"unrecognized arguments: {' '.join(extras)}")
        return namespace, extras

    def _subcommands(self) -> argparse._SubParsersAction | None:
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                return action
        return None

    def _check_leading_options(self, args: list[str]) -> None:
        """``daskyard --foo train``: argparse said 'COMMAND is required', not what is wrong."""
        known = {o for action in self._actions for o in action.option_strings}
        for arg in args:
            if not arg.startswith("-") or arg == "--":
                return  # the command: what follows is its parser's
            if arg.split("=", 1)[0] not in known:
                self.error(f"unrecognized arguments: {arg}")

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = ""
        if "unrecognized arguments:" in message:
            wrong = message.split(":", 1)[1].split()[0].split("=")[0]
            owner = _command_with(self, wrong) if wrong not in _long_options(self, False) else None
            close = difflib.get_close_matches(wrong, sorted(_long_options(self, False)), n=1)
            if owner:
                hint = f" ({wrong} goes after the command: '{self.prog} {owner} {wrong} ...')"
            elif close:
                hint = f" (did you mean {close[0]}?)"
        elif "invalid choice:" in message:
            wrong, *choices = re.findall(r"'([^']*)'", message)
            close = difflib.get_close_matches(wrong, choices, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
        where = self.prog.removeprefix("daskyard").strip()
        line = f"daskyard: error: {where + ': ' if where else ''}{message}{hint}"
        self._print_message(f"{line}; see '{self.prog} --help'\n", sys.stderr)
        self.print_usage(sys.stderr)
        self.exit(2)


def _command_with(parser: argparse.ArgumentParser, option: str) -> str | None:
    """The first subcommand path under ``parser`` that takes ``option``, e.g. 'train xgboost'."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                if option in _long_options(sub, recurse=False):
                    return name
                deeper = _command_with(sub, option)
                if deeper:
                    return f"{name} {deeper}"
    return None


def _long_options(parser: argparse.ArgumentParser, recurse: bool = True) -> set[str]:
    """Every --flag of a parser (and, with ``recurse``, of its subcommands)."""
    found = set()
    for action in parser._actions:
        found.update(o for o in action.option_strings if o.startswith("--"))
        if recurse and isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found |= _long_options(sub)
    return found


def _add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("cluster")
    group.add_argument(
        "--scheduler",
        metavar="ADDR",
        help="Dask scheduler to use, e.g. tcp://daskyard-scheduler.ml.svc.cluster.local:8786 "
        "(default: $DASK_SCHEDULER_ADDRESS, else an embedded local cluster)",
    )
    group.add_argument(
        "--local-workers",
        type=int,
        metavar="N",
        help="single-thread workers of the embedded cluster (default: one per core; XGBoost "
        "jobs: one worker with every core). Worker processes, except for XGBoost, whose "
        "workers are threads of this process (its training releases the GIL)",
    )


def _add_data_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("data")
    group.add_argument(
        "--train",
        metavar="URL",
        help="training data: a file, directory or glob of Parquet or CSV; any fsspec URL "
        "(path, file://, s3://, gs://)",
    )
    group.add_argument(
        "--validation",
        metavar="URL",
        help="validation data (default: a seeded split of --train, data.validation_fraction)",
    )
    group.add_argument("--target", metavar="COL", help="the label column")
    group.add_argument(
        "--output",
        metavar="URL",
        help="folder for model, metrics.json, manifest.json and checkpoints/",
    )


def _add_config_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="YAML config with the same names as the flags (flat or in sections); flags win",
    )


def build_parser() -> Parser:
    parser = Parser(
        prog="daskyard",
        description="Distributed machine-learning training with Dask, on Kubernetes or locally.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"daskyard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    commands.required = True

    train = commands.add_parser("train", help="train a model")
    kinds = train.add_subparsers(dest="kind", metavar="KIND", parser_class=Parser)
    kinds.required = True
    xgb = kinds.add_parser(
        "xgboost",
        help="gradient-boosted trees with XGBoost on Dask",
        description="Train XGBoost (hist, DaskQuantileDMatrix) on a Dask cluster. Writes "
        "model.ubj, metrics.json and manifest.json under --output; checkpoints every "
        "xgboost.checkpoint_every rounds and resumes from them when rerun.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_flag(xgb)
    _add_data_flags(xgb)
    group = xgb.add_argument_group("xgboost")
    group.add_argument("--rounds", type=int, metavar="N", help="boosting rounds (default 100)")
    group.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an XGBoost parameter, repeatable: --param max_depth=8 --param "
        "objective=binary:logistic (tree_method is always hist)",
    )
    _add_cluster_flags(xgb)
    xgb.set_defaults(handler=_train_xgboost)

    inc = kinds.add_parser(
        "incremental",
        help="any scikit-learn estimator with partial_fit, streamed out of core",
        description="Stream the training files block by block through partial_fit on the "
        "workers (seeded shuffled order per epoch, bounded prefetch), with streaming standard "
        "scaling for linear models. Writes model.skops (the whole pipeline), metrics.json and "
        "manifest.json under --output; checkpoints every incremental.checkpoint_every blocks "
        "and resumes from them when rerun.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_flag(inc)
    group = inc.add_argument_group("estimator")
    group.add_argument(
        "--estimator",
        metavar="DOTTED.PATH",
        help="a scikit-learn estimator class with partial_fit, e.g. "
        "sklearn.linear_model.SGDClassifier (packages: incremental.allowed_packages)",
    )
    group.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an estimator parameter, repeatable: --param loss=log_loss --param alpha=1e-4",
    )
    group.add_argument("--epochs", type=int, metavar="N", help="passes over the data (default 1)")
    group.add_argument(
        "--replicas",
        type=int,
        metavar="R",
        help="linear SGD models: fit R copies side by side, one block each, and average them "
        "after every R blocks (default 1: one sequential chain); the result depends on R, "
        "never on the number of workers",
    )
    _add_data_flags(inc)
    _add_cluster_flags(inc)
    inc.set_defaults(handler=_train_incremental)

    search = commands.add_parser("search", help="search hyperparameters")
    search_kinds = search.add_subparsers(dest="kind", metavar="KIND", parser_class=Parser)
    search_kinds.required = True
    srch = search_kinds.add_parser(
        "incremental",
        help="successive halving over partial_fit budgets",
        description="Sample --candidates parameter sets from --space (seeded), train them in "
        "parallel across the workers with partial_fit, and keep the best 1/reduction at each "
        "rung with reduction times the blocks. Writes model.skops (the best pipeline), "
        "results.json (every candidate, its budget and scores), metrics.json (with "
        "best_params) and manifest.json under --output.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_config_flag(srch)
    group = srch.add_argument_group("search")
    group.add_argument(
        "--estimator", metavar="DOTTED.PATH", help="a scikit-learn estimator class with partial_fit"
    )
    group.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="KEY=SPEC",
        help="a searched parameter, repeatable; SPEC is loguniform:LO:HI, uniform:LO:HI, "
        "int:LO:HI or choice:A,B,C (e.g. --space alpha=loguniform:1e-6:1e-1)",
    )
    group.add_argument(
        "--candidates", type=int, metavar="N", help="parameter sets to sample (default 16)"
    )
    group.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a fixed estimator parameter, repeatable",
    )
    _add_data_flags(srch)
    _add_cluster_flags(srch)
    srch.set_defaults(handler=_search_incremental)

    render = commands.add_parser("render", help="print Kubernetes manifests")
    render_kinds = render.add_subparsers(dest="what", metavar="WHAT", parser_class=Parser)
    render_kinds.required = True
    job = render_kinds.add_parser(
        "job",
        help="a ConfigMap and a Job for kubectl apply -f -",
        description="Validate --config, then print a ConfigMap holding it and a batch/v1 Job "
        "(unique name per run: a Job's template is immutable) that runs it against the chart's "
        "cluster. Usage: daskyard render job xgboost --config job.yaml | kubectl apply -f -",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    job.add_argument(
        "kind",
        choices=["xgboost", "incremental", "search"],
        help="train xgboost, train incremental or search incremental",
    )
    job.add_argument("--config", required=True, metavar="FILE", help="the job config (YAML)")
    job.add_argument(
        "--image", metavar="IMG", help=f"runtime image (default daskyard/runtime:{__version__})"
    )
    job.add_argument(
        "--cluster",
        default="daskyard-default",
        metavar="NAME",
        help="DaskCluster to run on (default daskyard-default: the chart's)",
    )
    job.add_argument("--namespace", metavar="NS", help="namespace of the Job and the cluster")
    job.add_argument(
        "--name", metavar="NAME", help="Job name (default daskyard-KIND-<time>-<random>)"
    )
    job.add_argument(
        "--tls-secret",
        metavar="NAME",
        help="for a cluster that requires mutual TLS (the chart's tls.enabled): mount this "
        "Secret (ca.crt, tls.crt, tls.key) at /etc/dask/tls and dial tls://",
    )
    job.set_defaults(handler=_render_job)

    doctor = commands.add_parser(
        "doctor",
        help="check a cluster: versions, workers, autoscaler API",
        description="Print package versions of client, scheduler and workers, the workers and "
        "their memory, and whether the scheduler serves /api/v1/adaptive_target (what the "
        "Dask operator's autoscaler polls). Exits 2 when versions differ or the API is missing.",
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doctor.add_argument(
        "--scheduler",
        metavar="ADDR",
        help="scheduler address (default: $DASK_SCHEDULER_ADDRESS, else embedded)",
    )
    doctor.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="how long to try to reach the scheduler (default 30)",
    )
    doctor.set_defaults(handler=_doctor)

    demo = commands.add_parser(
        "demo",
        help="generate data and train on an embedded cluster",
        description="Generate a synthetic classification data set (Parquet) and train XGBoost "
        "on an embedded local Dask cluster.",
    )
    demo.add_argument(
        "--dir",
        default="daskyard-demo",
        metavar="PATH",
        help="where data and artifacts go (default ./daskyard-demo)",
    )
    demo.add_argument(
        "--rows", type=int, default=300_000, metavar="N", help="rows to generate (default 300000)"
    )
    demo.add_argument(
        "--local-workers",
        type=int,
        metavar="N",
        help="one-thread workers of the embedded cluster, threads of this process "
        "(default: one worker with every core)",
    )
    demo.set_defaults(handler=_demo)
    return parser


def _params(values: Sequence[str]) -> dict[str, Any] | None:
    from daskyard.config import parse_param

    return dict(parse_param(v) for v in values) or None


def _data_and_cluster_overrides(args: argparse.Namespace) -> dict[tuple[str, ...], Any]:
    return {
        ("data", "train"): args.train,
        ("data", "validation"): args.validation,
        ("data", "target"): args.target,
        ("output",): args.output,
        ("cluster", "scheduler"): args.scheduler,
        ("cluster", "local_workers"): args.local_workers,
    }


def _run_job(kind: str, args: argparse.Namespace, overrides: dict[tuple[str, ...], Any]) -> int:
    from daskyard.config import JOB_KINDS, build_config
    from daskyard.runner import RUNNERS

    model, flat_keys = JOB_KINDS[kind]
    config = build_config(
        model,
        config_file=args.config,
        overrides={**_data_and_cluster_overrides(args), **overrides},
        flat_keys=flat_keys,
    )
    RUNNERS[kind](config)
    return 0


def _train_xgboost(args: argparse.Namespace) -> int:
    return _run_job(
        "xgboost",
        args,
        {
            ("xgboost", "rounds"): args.rounds,
            ("xgboost", "params"): _params(args.param),
        },
    )


def _train_incremental(args: argparse.Namespace) -> int:
    return _run_job(
        "incremental",
        args,
        {
            ("incremental", "estimator"): args.estimator,
            ("incremental", "epochs"): args.epochs,
            ("incremental", "replicas"): args.replicas,
            ("incremental", "params"): _params(args.param),
        },
    )


def _space(values: Sequence[str]) -> dict[str, str] | None:
    space = {}
    for value in values:
        key, sep, spec = value.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--space '{value}' is not KEY=SPEC (e.g. alpha=loguniform:1e-6:1)")
        space[key.strip()] = spec.strip()
    return space or None


def _search_incremental(args: argparse.Namespace) -> int:
    return _run_job(
        "search",
        args,
        {
            ("search", "estimator"): args.estimator,
            ("search", "space"): _space(args.space),
            ("search", "candidates"): args.candidates,
            ("search", "params"): _params(args.param),
        },
    )


def _render_job(args: argparse.Namespace) -> int:
    from daskyard.render import render_job

    manifests = render_job(
        args.kind,
        args.config,
        image=args.image,
        cluster=args.cluster,
        namespace=args.namespace,
        name=args.name,
        tls_secret=args.tls_secret,
    )
    sys.stdout.write(manifests)
    return 0


def _doctor(args: argparse.Namespace) -> int:
    from daskyard.doctor import run_doctor

    return run_doctor(args.scheduler, args.timeout)


def _demo(args: argparse.Namespace) -> int:
    from daskyard.demo import run_demo

    if args.rows < 1000:
        raise ConfigError(f"--rows {args.rows} is too small for a demo: use at least 1000")
    run_demo(args.dir, args.rows, args.local_workers)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # A lost scheduler makes distributed log reconnect tracebacks; the job's own
    # one-line error (exit 75) says what happened and what to do. Importing
    # distributed configures its loggers, so the level is set after that.
    import dask
    import distributed  # noqa: F401

    logging.getLogger("distributed.client").setLevel(logging.CRITICAL)
    # Nor distributed's INFO chatter (comms closing as an embedded cluster shuts down,
    # printed around the job's own lines); DASK_LOGGING__DISTRIBUTED=debug still gets it.
    if str(dask.config.get("logging.distributed", "info")).lower() == "info":
        logging.getLogger("distributed").setLevel(logging.WARNING)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        with never_swallowed():
            return handler(args)
    except DaskyardError as exc:
        print(f"daskyard: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt as interrupt:
        let_go(interrupt)
        print("daskyard: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_left()
    except Exception as exc:  # the one place unexpected errors become exit 1
        print(f"daskyard: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        traceback.print_exc()
        return 1


def _reader_left() -> int:
    """The reader of stdout went away (``render job | head``): say nothing, as cat and
    yes say nothing, and exit as a shell reports them, 128 + SIGPIPE."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
    return 141


def entry() -> None:
    """The ``daskyard`` console script: ``main()``, then a prompt exit.

    After a training, tearing the interpreter down (finalising the modules and
    threads of distributed, XGBoost, pandas and pyarrow) took about 0.9 s on
    2 cores, a third of the embedded run's fixed cost. By then every output is
    committed and the embedded cluster is closed, so nothing is left to finalise
    but the streams. ``main()`` itself returns normally, for callers in Python.
    """
    hide_scikit_learn_from_xgboost()  # this process runs one job: see its docstring
    code = main()
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        code = _reader_left()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    entry()
