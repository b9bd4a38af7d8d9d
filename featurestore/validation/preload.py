"""Import great_expectations in a background thread, so its one-time import (2-3 s) overlaps work that
does not need it: a pipeline starts it after reading events, while the item model fits (numpy, scipy
and BLAS, which leave the interpreter free), and its inserts find the module loaded. The import lock
makes an insert that arrives early simply wait for the import to finish. Modules the fit itself will
need later (the embedder's ``imports``, e.g. scikit-learn's SVD, 0.6 s) are imported first."""

from __future__ import annotations

import importlib
import sys
import threading
from collections.abc import Sequence

from featurestore.validation import gx


def start(first: Sequence[str] = ()) -> threading.Thread | None:
    """Start importing the modules ``first`` and then great_expectations, unless all are loaded; join
    the thread when done."""
    modules = [m for m in first if m not in sys.modules]
    if not modules and gx.loaded():
        return None
    thread = threading.Thread(target=_load, args=(modules,), name="featurestore-preload", daemon=True)
    thread.start()
    return thread


def _load(modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception:  # whoever needs it imports it again and reports the error there
            continue
    try:
        gx.load()
    except Exception:  # the validation that needs it loads it again and reports the error there
        return
