"""The great_expectations adapter: the only module that imports great_expectations.

It is imported only when a batch is validated (``import featurestore`` and serving never pay its
~2 s import). One ephemeral data context per process, analytics and progress bars off, in-memory
stores only: nothing is sent over the network and no file is written. Errors from great_expectations
are translated to :class:`~featurestore.errors.ValidationError` here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

from featurestore.errors import ValidationError
from featurestore.validation.report import CheckResult

_lock = threading.Lock()
_load_lock = threading.Lock()
_state: dict[str, Any] = {}
_SHOW = 5  # unexpected values kept in a report


def load() -> Any:
    """great_expectations, imported on first use. Its import takes about 2 s, so it is the one library
    imported late: neither ``import featurestore`` nor serving pays it, and a pipeline starts it in the
    background while its model fits (:mod:`featurestore.validation.preload`)."""
    with _load_lock:
        ge = _state.get("ge")
        if ge is None:
            os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # before the import: never phone home
            with warnings.catch_warnings(), _main_module_named():
                # its import-time deprecation noise is not our users' concern
                warnings.simplefilter("ignore", DeprecationWarning)
                warnings.simplefilter("ignore", PendingDeprecationWarning)
                # with pyspark installed, great_expectations imports it, and pyspark warns about pandas 3
                warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
                import great_expectations
                import great_expectations.data_context.types.base
            ge = _state["ge"] = great_expectations
        return ge


@contextlib.contextmanager
def _main_module_named() -> Iterator[None]:
    """great_expectations imports ``pyspark.sql.connect`` when pyspark is installed, and that module
    calls ``sys.exit(0)`` when the main module has neither a spec nor a file (it takes that for its own
    doctest run), which is exactly the case of ``python -c`` and ``python -``. For the import, the main
    module gets a ``__file__`` saying what it is; pyspark then raises the ImportError that
    great_expectations expects when Spark Connect's own dependencies are missing."""
    main = sys.modules.get("__main__")
    name = main is not None and getattr(main, "__spec__", None) is None and not hasattr(main, "__file__")
    if name:
        main.__file__ = "<string>"  # type: ignore[union-attr]
    try:
        yield
    finally:
        if name and getattr(main, "__file__", None) == "<string>":
            del main.__file__  # type: ignore[union-attr]


def loaded() -> bool:
    """Whether great_expectations has been imported (by :func:`load`)."""
    return "ge" in _state


def _context() -> Any:
    """The process's ephemeral great_expectations context (created once)."""
    context = _state.get("context")
    if context is None:
        gx = load()
        types = gx.data_context.types.base
        config = types.DataContextConfig(
            store_backend_defaults=types.InMemoryStoreBackendDefaults(),
            analytics_enabled=False,
            progress_bars=types.ProgressBarsConfig(globally=False, metric_calculations=False),
        )
        context = _state["context"] = gx.get_context(project_config=config, mode="ephemeral")
    return context


def _batch_definition(kind: str = "pandas") -> Any:
    """The context's one whole-dataframe batch definition of ``kind`` (``pandas``, or ``spark``: a Spark
    DataFrame validated by great_expectations' Spark execution engine), created once."""
    bd = _state.get(f"batch_definition:{kind}")
    if bd is None:
        context = _context()
        if kind == "spark":
            source = context.data_sources.add_spark("featurestore_spark")
        else:
            source = context.data_sources.add_pandas("featurestore")
        asset = source.add_dataframe_asset("batch")
        bd = _state[f"batch_definition:{kind}"] = asset.add_batch_definition_whole_dataframe("whole")
    return bd


def to_suite(document: dict[str, Any]) -> Any:
    """A great_expectations ExpectationSuite from its JSON form (see :mod:`.suite`)."""
    try:
        return load().ExpectationSuite(name=document["name"], expectations=list(document["expectations"]),
                                   meta=dict(document.get("meta") or {}))
    except Exception as exc:
        raise ValidationError(f"great_expectations rejected the suite {document.get('name')!r}: {exc}") from exc


def suite_json(document: dict[str, Any]) -> dict[str, Any]:
    """The suite as great_expectations serialises it (what a round trip through GE gives back)."""
    return to_suite(document).to_json_dict()


def _definition(document: dict[str, Any], kind: str = "pandas") -> Any:
    """The context's ValidationDefinition for this suite document (added once per distinct document)."""
    digest = hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode()).hexdigest()[:16]
    defs = _state.setdefault("definitions", {})
    vd = defs.get((kind, digest))
    if vd is None:
        bd = _batch_definition(kind)
        context = _state["context"]
        name = f"{document['name']}-{digest}" + ("" if kind == "pandas" else f"-{kind}")
        suite = to_suite(document)
        suite.name = name  # unique in the context; messages keep the document's name
        if len(suite.expectations) != len(document["expectations"]):
            raise ValidationError(f"great_expectations dropped expectations of suite {document['name']!r}")
        suite = context.suites.add(suite)
        vd = defs[(kind, digest)] = context.validation_definitions.add(
            load().ValidationDefinition(name=name, data=bd, suite=suite))
    return vd


def run(document: dict[str, Any], frame: pd.DataFrame | Any, *, spark: bool = False) -> list[CheckResult]:
    """Run the suite on ``frame`` (a pandas DataFrame, or with ``spark`` a Spark DataFrame, validated
    where it lives); one CheckResult per expectation, in suite order."""
    return [_check(item, r) for item, r in zip(document["expectations"], outcomes(document, frame, spark=spark),
                                               strict=True)]


def outcomes(document: dict[str, Any], frame: pd.DataFrame | Any, *, spark: bool = False) -> list[Any]:
    """great_expectations' own result of each expectation of the suite on ``frame``, in suite order (None
    where it gave none): what :func:`merged` combines over batches."""
    with _lock:
        try:
            vd = _definition(document, "spark" if spark else "pandas")
            # one ValidationDefinition run: the frame is fingerprinted once (Batch.validate does it twice)
            result = vd.run(batch_parameters={"dataframe": frame}, result_format="SUMMARY")
            results_store = _state["context"].validation_results_store
            for key in results_store.list_keys():  # keep nothing in memory between inserts
                results_store.remove_key(key)
        except ValidationError:
            raise
        except Exception as exc:  # GE raises a wide variety; all mean "could not validate"
            raise ValidationError(f"great_expectations could not run suite {document['name']!r}: {exc}") from exc
    by_check = {r.expectation_config.meta.get("check"): r for r in result.results}
    return [by_check.get(item["meta"]["check"]) for item in document["expectations"]]


ROW_WISE = ("expect_column_values_to_not_be_null", "expect_column_values_to_be_between",
            "expect_column_values_to_be_in_set")  # one verdict per row: results over batches add up
UNIQUE = "expect_column_values_to_be_unique"
ROW_COUNT = "expect_table_row_count_to_be_between"


@dataclass(frozen=True)
class _Merged:
    """A row-wise expectation's result over consecutive batches, shaped as great_expectations' own."""

    success: bool
    result: dict[str, Any]
    exception_info: dict[str, Any] | None = None


def merged(item: dict[str, Any], parts: list[Any], starts: list[int] | None = None, *,
           rows: list[Any] | None = None) -> CheckResult:
    """The CheckResult great_expectations gives for row-wise expectation ``item`` on the rows of several
    batches together, from its results on each (``starts``: each batch's first row): counts added,
    percentages and the verdict computed as great_expectations computes them (``_format_map_output``, a
    column map's ``mostly``), the first unexpected values and row numbers in row order.

    ``rows`` instead of ``starts``: each part's row numbers (its frame's row i is row ``rows[k][i]``: an
    array, or a mapping of the rows its result shows), for
    parts that are groups of whole keys rather than consecutive batches; then values-unique too adds up
    (a row's value repeats within its group exactly when it repeats at all), and so does the row count
    (the groups' counts added, the verdict great_expectations' ``min_value``/``max_value`` bounds give)."""
    if item["type"] not in ROW_WISE and not (rows is not None and item["type"] in (UNIQUE, ROW_COUNT)):
        raise ValueError(f"{item['type']} is not row-wise: its results over batches do not add up")
    for r in parts:
        if r is None or (r.exception_info or {}).get("raised_exception"):
            return _check(item, r)
    res = [r.result or {} for r in parts]
    if item["type"] == ROW_COUNT:
        n = sum(int(x.get("observed_value") or 0) for x in res)
        kw = item["kwargs"]
        low, high = kw.get("min_value"), kw.get("max_value")
        ok = (low is None or (n > low if kw.get("strict_min") else n >= low)) and \
            (high is None or (n < high if kw.get("strict_max") else n <= high))
        return _check(item, _Merged(ok, {"observed_value": n}))
    total = sum(int(x.get("element_count") or 0) for x in res)
    unexpected = sum(int(x.get("unexpected_count") or 0) for x in res)
    mostly = float(item["kwargs"].get("mostly", 1.0))
    if all("missing_count" in x for x in res):  # a column map counting the non-null rows only
        considered = total - sum(int(x["missing_count"] or 0) for x in res)
        percent = None if not total else unexpected / considered * 100 if considered > 0 else None
        ok = True if total == 0 or considered == 0 else \
            (float(considered) - float(unexpected)) / float(considered) >= mostly
    else:  # not null: every row counts
        percent = unexpected / total * 100 if total else None
        ok = True if total == 0 else (total - unexpected) / total >= mostly
    examples = [v for x in res for v in (x.get("partial_unexpected_list") or [])]
    if rows is None:
        assert starts is not None
        at = [int(i) + s if isinstance(i, int) else i for x, s in zip(res, starts, strict=True)
              for i in (x.get("partial_unexpected_index_list") or [])]
    else:  # each group's first rows, renumbered, then the first of all of them in row order
        at = [int(r[int(i)]) for x, r in zip(res, rows, strict=True)
              for i in (x.get("partial_unexpected_index_list") or [])]
        if len(at) == len(examples):
            examples = [examples[j] for j in np.argsort(at, kind="stable")]
        at = sorted(at)
    out = {"element_count": total, "unexpected_count": unexpected, "unexpected_percent": percent,
           "partial_unexpected_list": examples[:_SHOW], "partial_unexpected_index_list": at[:_SHOW]}
    return _check(item, _Merged(ok, out))


def _check(item: dict[str, Any], r: Any) -> CheckResult:
    kwargs = {k: v for k, v in item["kwargs"].items() if k not in ("column", "column_list", "batch_id")}
    base = dict(name=item["meta"]["check"], engine="great_expectations", expectation=item["type"],
                column=item["meta"].get("column"), threshold=kwargs)
    if r is None:
        return CheckResult(**base, success=False, details="no result from great_expectations")  # type: ignore[arg-type]
    info = r.exception_info or {}
    if info.get("raised_exception"):
        return CheckResult(**base, success=False,  # type: ignore[arg-type]
                           details=f"great_expectations raised: {info.get('exception_message')}")
    res = r.result or {}
    if "observed_value" in res:
        observed: Any = res["observed_value"]
    else:
        observed = {"unexpected_count": res.get("unexpected_count"),
                    "unexpected_percent": res.get("unexpected_percent"),
                    "element_count": res.get("element_count")}
        examples = res.get("partial_unexpected_list") or []
        if examples:
            observed["examples"] = [str(v) if not isinstance(v, int | float | str | bool) else v
                                    for v in examples[:_SHOW]]
        rows = res.get("partial_unexpected_index_list") or []
        if rows:
            observed["rows"] = [int(i) if isinstance(i, int) else str(i) for i in rows[:_SHOW]]
    return CheckResult(**base, success=bool(r.success), observed=observed)  # type: ignore[arg-type]
