"""The ``featurestore`` command: a thin layer over the library, one sub-command per library call.

Each sub-command module has ``register(subparsers)``, adding its parsers with ``func`` set to a
function of the parsed arguments that returns the exit code.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import sys
import threading
from typing import NoReturn

from featurestore.cli import console, core, online, pipelines, training, upkeep, validate
from featurestore.cli._common import CLIError, add_root
from featurestore.errors import FeatureStoreError

EPILOG = """examples:
  featurestore init
  featurestore apply schemas/
  featurestore ls
  featurestore run pipelines/purchase_embeddings.py --cutoff 2026-11-01
  featurestore validate item_embeddings --commit 2
  featurestore sql "SELECT item_id, n_events FROM item_embeddings ORDER BY n_events DESC LIMIT 5"
  featurestore ui --port 8080

Every command takes --root PATH, before or after the command (default: $FEATURESTORE_ROOT, else
./featurestore_data); commands that read a store refuse a folder that holds none."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featurestore",
        description="An embedding feature store: versioned feature groups on Delta Lake, DuckDB SQL.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress and the SQL run")
    add_root(parser, top=True)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in (core, online, training, pipelines, validate, upkeep, console):
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except (FeatureStoreError, CLIError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (`... | head`): nothing more to say, and no traceback
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115  later flushes must not fail again
        return 141


def entry() -> NoReturn:
    """The ``featurestore`` console command: :func:`main`, then :func:`exit_now`."""
    exit_now(main())


def exit_now(code: int) -> NoReturn:
    """End the process with ``code`` without the interpreter's teardown, which frees every module and
    object one by one: 0.6 s once great_expectations and scikit-learn are loaded, on every command
    (a pipeline run takes 7 s). What the interpreter's exit does that matters happens first, through
    the same CPython hooks it calls: thread pools are stopped and non-daemon threads joined
    (``threading._shutdown``), exit handlers run (DuckDB closed, background cache writes finished,
    temporary directories removed, logging flushed); then stdout and stderr are flushed, and a
    failed flush (a full disk, a closed pipe) turns a success into exit code 120, as Python's own exit
    does. Call it from the main thread; elsewhere, or on an interpreter without those hooks, it is a
    plain ``sys.exit``."""
    shutdown = getattr(threading, "_shutdown", None)
    run_exit_handlers = getattr(atexit, "_run_exitfuncs", None)
    if shutdown is None or run_exit_handlers is None or threading.current_thread() is not threading.main_thread():
        sys.exit(code)
    shutdown()
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        if stream is None:  # started with the stream closed
            continue
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120
    os._exit(code)


if __name__ == "__main__":  # pragma: no cover
    exit_now(main())
