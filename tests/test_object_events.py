"""Pipeline events on an object store (``s3://bucket/...``) on the DuckDB engine, against a real
S3-compatible server on 127.0.0.1: a file, a prefix and a glob read the same events as the local files
(in memory and kept in DuckDB), a pipeline runs from them, and a missing path or refused keys are typed
errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from featurestore import FeatureStore
from featurestore.embed import CooccurrenceEmbedder
from featurestore.engine import Columns, DuckDBEngine, Events, EventSource
from featurestore.engine.duckdb_events import DuckDBEvents
from featurestore.errors import EventsError, StorageAccessDenied
from featurestore.pipeline import Pipeline
from featurestore.synthetic import purchase_histories
from tests.s3_server import ACCESS_KEY, REGION, SECRET_KEY, S3Server, serving

BUCKET = "featurestore-events"
COLUMNS = Columns(entity="user_id", item="item_id", type="event_type", time="event_time")
W = {"view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    yield from serving(BUCKET)


@pytest.fixture
def uploaded(s3: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """Synthetic events in three Parquet files, locally and under a fresh prefix of the bucket (plus a
    stray non-Parquet object); the AWS variables point at the server."""
    s3.use_in(monkeypatch)
    events = purchase_histories(n_users=300, n_items=150, n_events=6_000, seed=3).events
    local = tmp_path / "events"
    local.mkdir()
    prefix = f"{BUCKET}/{uuid.uuid4().hex[:10]}"
    fs = pafs.S3FileSystem(access_key=ACCESS_KEY, secret_key=SECRET_KEY, region=REGION,
                           endpoint_override=f"127.0.0.1:{s3.port}", scheme="http")
    step = -(-events.num_rows // 3)
    for n in range(3):
        part = events.slice(n * step, step)
        pq.write_table(part, local / f"part-{n}.parquet", row_group_size=500)
        pq.write_table(part, f"{prefix}/day={n}/part-{n}.parquet", filesystem=fs, row_group_size=500)
    with fs.open_output_stream(f"{prefix}/_SUCCESS") as out:
        out.write(b"")
    return f"s3://{prefix}", local


def _same(a, b) -> None:
    la, lb = a.load(), b.load()
    assert list(la.item_ids) == list(lb.item_ids) and list(la.entity_ids) == list(lb.entity_ids)
    for f in ("entity", "item", "weight", "time", "item_count"):
        np.testing.assert_array_equal(getattr(la, f), getattr(lb, f))


@pytest.mark.parametrize("chunk", [10**9, 1_000])
def test_a_prefix_a_glob_and_a_file_read_what_the_local_files_hold(uploaded, chunk):
    uri, local = uploaded
    engine = DuckDBEngine(chunk_events=chunk)
    want = engine.read_events(EventSource(str(local / "*.parquet"), columns=COLUMNS), weights=W)
    paths = (uri, f"{uri}/", f"{uri}/day=*/*.parquet", f"{uri}/**/*.parquet") if chunk > 10**6 else (uri,)
    for path in paths:
        with engine.read_events(EventSource(path, columns=COLUMNS), weights=W) as got:
            assert isinstance(got, Events if chunk > 10**6 else DuckDBEvents)
            _same(got, want)
    one = engine.read_events(EventSource(f"{uri}/day=1/part-1.parquet", columns=COLUMNS), weights=W)
    assert 0 < len(one) < len(want)


def test_a_pipeline_reads_its_events_from_the_bucket(uploaded, tmp_path):
    uri, local = uploaded
    cutoff = datetime(2026, 12, 1, tzinfo=UTC)
    local_events = DuckDBEngine().read_events(EventSource(str(local / "*.parquet"), columns=COLUMNS), weights=W,
                                              before=cutoff)
    store = FeatureStore(tmp_path / "store")
    store.apply("schemas")
    pipeline = Pipeline("p", EventSource(f"{uri}/**/*.parquet", columns=COLUMNS), embedder=CooccurrenceEmbedder(),
                        weights=W, items=("item_embeddings", 1), entities=("user_embeddings", 1))
    result = pipeline.run(store, cutoff, quiet=True)
    assert result.events == len(local_events) > 0
    assert result.entities_written == local_events.n_entities
    assert store.feature_group("user_embeddings", 1).count() == local_events.n_entities


def test_missing_events_and_refused_keys_are_typed_errors(uploaded, monkeypatch):
    uri, _ = uploaded
    with pytest.raises(EventsError, match="no events file matches"):
        DuckDBEngine().read_events(EventSource(f"{uri}/nothing-*.parquet", columns=COLUMNS), weights=W)
    with pytest.raises(EventsError, match="no events file matches"):
        DuckDBEngine().read_events(EventSource(f"{uri}/absent/", columns=COLUMNS), weights=W)
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(StorageAccessDenied, match="AWS_SECRET_ACCESS_KEY"):
        DuckDBEngine().read_events(EventSource(uri, columns=COLUMNS, storage_options={"access_key_id": "me"}),
                                   weights=W)
