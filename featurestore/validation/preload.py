"""Import great_expectations in a background thread, so its one-time import (2-3 s) overlaps work that
does not need it: a pipeline starts it before reading events and fitting (which run in DuckDB and
BLAS, leaving the interpreter free), and its inserts find the module loaded. The import lock makes an
insert that arrives early simply wait for the import to finish."""

from __future__ import annotations

import importlib
import sys
import threading

_MODULE = "featurestore.validation.gx"


def start() -> threading.Thread | None:
    """Start importing the great_expectations adapter unless it is loaded; join the thread when done."""
    if _MODULE in sys.modules:
        return None
    thread = threading.Thread(target=_load, name="featurestore-gx-import", daemon=True)
    thread.start()
    return thread


def _load() -> None:
    try:
        importlib.import_module(_MODULE)
    except Exception:  # the insert imports it again and reports the error there
        return
