"""DuckDB over the store: views per group and version, older commits, vectors as FLOAT[dim], threads."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
import yaml

from featurestore import FeatureGroupNotFound, QueryError
from tests.conftest import SCHEMAS, T0, item_batch, vectors


def test_views_see_newest_commit_and_vectors_are_arrays(store):
    fg = store.feature_group("item_embeddings", version=1)
    assert store.sql("SELECT count(*) FROM item_embeddings").fetchall()[0] == (0,)
    fg.insert(item_batch(50), cutoff=T0)
    types = dict(store.sql("SELECT column_name, column_type FROM (DESCRIBE item_embeddings)").fetchall())
    assert types["embedding"] == "FLOAT[64]"
    assert types["event_time"] == "TIMESTAMP WITH TIME ZONE"
    assert store.sql("SELECT count(*) FROM item_embeddings_v1").fetchall()[0] == (50,)
    fg.insert(item_batch(5, start=50), cutoff=T0)
    assert store.sql("SELECT count(*) FROM item_embeddings").fetchall()[0] == (55,)


def test_exact_cosine_top10_matches_numpy(store):
    fg = store.feature_group("item_embeddings", version=1)
    fg.insert(item_batch(500, seed=3), cutoff=T0)
    v = vectors(500, seed=3)
    q = vectors(1, seed=99)[0]
    got = store.sql(
        "SELECT item_id, array_cosine_similarity(embedding, $q::FLOAT[64]) AS s "
        "FROM item_embeddings ORDER BY s DESC LIMIT 10", params={"q": q.tolist()}).fetchall()
    scores = v @ q / (np.linalg.norm(v, axis=1) * np.linalg.norm(q))
    want = np.argsort(-scores)[:10]
    assert [r[0] for r in got] == [f"i{i}" for i in want]
    np.testing.assert_allclose([r[1] for r in got], scores[want], rtol=1e-5)


def test_older_commit_by_number_and_time(store):
    fg = store.feature_group("item_embeddings", version=1)
    fg.insert(item_batch(10), cutoff=T0)
    first = fg.history()[-1].timestamp
    fg.insert(item_batch(10, start=10), cutoff=T0 + timedelta(days=1))
    q = "SELECT count(*) FROM item_embeddings"
    assert store.sql(q, commits={"item_embeddings": 1}).fetchall()[0] == (10,)
    assert store.sql("SELECT count(*) FROM item_embeddings_v1", commits={"item_embeddings_v1": 0}).fetchall()[0] == (0,)
    assert store.sql(q, commit_time=first).fetchall()[0] == (10,)
    assert store.sql(q).fetchall()[0] == (20,)  # pins last for one query only
    with pytest.raises(FeatureGroupNotFound):
        store.sql(q, commits={"nope": 1})


def test_pinned_version_views(tmp_path, store):
    doc = yaml.safe_load((SCHEMAS / "item_embeddings.v1.yaml").read_text())
    doc.update(version=2)
    doc["features"][0]["dim"] = 8
    p = tmp_path / "item_embeddings.v2.yaml"
    p.write_text(yaml.safe_dump(doc))
    store.apply(p)
    store.feature_group("item_embeddings", 1).insert(item_batch(3), cutoff=T0)
    store.feature_group("item_embeddings", 2).insert(item_batch(4, dim=8), cutoff=T0)
    assert store.sql("SELECT count(*) FROM item_embeddings").fetchall()[0] == (4,)
    assert store.sql("SELECT count(*) FROM item_embeddings_v1").fetchall()[0] == (3,)
    t = dict(store.sql("SELECT column_name, column_type FROM (DESCRIBE item_embeddings)").fetchall())
    assert t["embedding"] == "FLOAT[8]"


def test_views_ignore_orphan_files_in_the_folder(tmp_path, store):
    fg = store.feature_group("item_embeddings", version=1)
    fg.insert(item_batch(7), cutoff=T0)
    # a file a crashed writer left behind: never part of a commit, never read
    src = Path(fg.files()[0].removeprefix("file://"))
    (src.parent / "part-orphan.parquet").write_bytes(src.read_bytes())
    assert store.sql("SELECT count(*) FROM item_embeddings").fetchall()[0] == (7,)


def test_bad_query_is_a_query_error(store):
    with pytest.raises(QueryError, match="nope"):
        store.sql("SELECT * FROM nope")
    with pytest.raises(QueryError):
        store.sql("SELEC 1")


def test_queries_from_many_threads(store):
    fg = store.feature_group("item_embeddings", version=1)
    fg.insert(item_batch(100), cutoff=T0)
    results, errors = [], []

    def work():
        try:
            for _ in range(20):
                results.append(store.sql("SELECT count(*), sum(n_events) FROM item_embeddings").fetchall()[0])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert set(results) == {(100, sum(range(100)))}


def test_latest_views_hold_one_row_per_key_the_newest(store):
    fg = store.feature_group("item_embeddings", version=1)
    fg.insert(item_batch(10), cutoff=T0)
    fg.insert(item_batch(4, seed=5), cutoff=T0 + timedelta(days=1))  # i0..i3 again, later
    assert store.sql("SELECT count(*) FROM item_embeddings").fetchall()[0] == (14,)
    assert store.sql("SELECT count(*), count(DISTINCT item_id) FROM item_embeddings_latest").fetchall()[0] == (10, 10)
    latest = dict(store.sql("SELECT item_id, event_time FROM item_embeddings_v1_latest").fetchall())
    assert latest["i0"] == T0 + timedelta(days=1) and latest["i9"] == T0
    # the same as FeatureGroup.latest()
    want = fg.latest()
    got = store.sql("SELECT * EXCLUDE (_ingested_at) FROM item_embeddings_latest ORDER BY item_id").to_arrow_table()
    assert got.column("item_id").to_pylist() == want.column("item_id").to_pylist()
    assert got.column("n_events").to_pylist() == want.column("n_events").to_pylist()
    # pinned to an older commit for one query: the latest view follows
    q = "SELECT event_time FROM item_embeddings_latest WHERE item_id = 'i0'"
    assert store.sql(q, commits={"item_embeddings": 1}).fetchall()[0] == (T0,)
    assert store.sql(q).fetchall()[0] == (T0 + timedelta(days=1),)
