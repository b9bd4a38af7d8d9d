"""End to end pipeline run on synthetic purchase histories, next to gensim item2vec's fit alone.

One `featurestore run` in its own process (read, fit, align, aggregate, validate, commit: item and
user embeddings) on N events, timed with its peak RSS; then a second date (a retrained model aligned
onto the first) and a re-run of the same date. The peer, gensim Word2Vec (skip-gram, 5 negatives,
window 5; 2 workers, corpus_file mode, its fastest) is timed fitting the same sequences.

    python benchmarks/bench_pipeline.py --quick     # 500k events
    python benchmarks/bench_pipeline.py             # 5M events, 100k users, 50k items, 64-d
    python benchmarks/bench_pipeline.py --against-previous 3   # and 3 alternating rounds against the
                                                               # previous default (first runs only)

``--against-previous N`` times the shipped pipeline's first run and the same run with the previous
default model (``scoring="next_item"``, half-life 5 events, every event) in N alternating rounds, each
run a fresh process into a fresh store, and prints each round's wall time, fit time and peak RSS, the
ratios, their medians and the machine's load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from featurestore.engine import read_events
from featurestore.engine.events import EventSource
from featurestore.synthetic import purchase_histories

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SIZES = {"quick": dict(n_users=10_000, n_items=5_000, n_events=500_000),
         "full": dict(n_users=100_000, n_items=50_000, n_events=5_000_000)}
WEIGHTS = {"view": 1.0, "add_to_cart": 2.0, "purchase": 4.0}
#: the previous default, as edits of the shipped pipeline file
PREVIOUS = (("CooccurrenceEmbedder(dim=64,", 'CooccurrenceEmbedder(scoring="next_item", dim=64,'),
            ("Aggregation(half_life=2, max_events=10)", "Aggregation(half_life=5)"))


def peers_python() -> str | None:
    exe = os.environ.get("FEATURESTORE_PEERS_PYTHON") or str(REPO / ".venv-peers" / "bin" / "python")
    return exe if os.path.exists(exe) else None


def run_cli(args: list[str], env: dict[str, str]) -> tuple[float, float, list[dict]]:
    """(wall seconds, peak RSS in GB, parsed --json results) of one `featurestore run` process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "featurestore", *args, "--json", "--quiet"], env=env,
                          capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"featurestore run failed:\n{proc.stderr}")
    rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    try:
        return wall, max(rss, before) / 1e6, json.loads(proc.stdout)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"unexpected output from featurestore run ({exc}):\n{proc.stdout[:2000]}") from exc


def against_previous(rounds: int, tmp: Path, cutoff: datetime, env: dict[str, str]) -> dict:
    """``rounds`` alternating first runs of the shipped pipeline and of the previous default (each a
    fresh process into a fresh store): per round wall and fit seconds, peak RSS and the ratios."""
    shipped = REPO / "pipelines" / "purchase_embeddings.py"
    text = shipped.read_text()
    for old, new in PREVIOUS:
        if old not in text:
            raise SystemExit(f"{shipped} no longer holds {old!r}: update PREVIOUS in {__file__}")
        text = text.replace(old, new)
    older = tmp / "previous_default.py"
    older.write_text(text)
    print(f"\nagainst the previous default, {rounds} alternating rounds (first run of {cutoff.date()}):", flush=True)
    out: list[dict] = []
    for k in range(rounds):
        row: dict = {"round": k + 1, "load_1min": os.getloadavg()[0]}
        for side, pipeline in (("shipped", shipped), ("previous", older)) if k % 2 == 0 else \
                (("previous", older), ("shipped", shipped)):
            root = tmp / f"cmp_{k}_{side}"
            subprocess.run([sys.executable, "-m", "featurestore", "apply", str(REPO / "schemas"), "--root", str(root)],
                           check=True, env=env, capture_output=True)
            wall, rss, res = _fresh_run(["run", str(pipeline), "--cutoff", cutoff.isoformat(), "--root", str(root)],
                                        env)
            row[side] = {"wall_s": wall, "fit_s": res[0]["seconds"].get("fit"), "peak_rss_gb": rss}
        row["wall_ratio"] = row["shipped"]["wall_s"] / row["previous"]["wall_s"]
        row["fit_ratio"] = row["shipped"]["fit_s"] / row["previous"]["fit_s"]
        out.append(row)
        print(f"  round {k + 1} (load {row['load_1min']:.1f}): shipped {row['shipped']['wall_s']:.1f}s "
              f"(fit {row['shipped']['fit_s']:.1f}s, {row['shipped']['peak_rss_gb']:.2f} GB)  previous "
              f"{row['previous']['wall_s']:.1f}s (fit {row['previous']['fit_s']:.1f}s, "
              f"{row['previous']['peak_rss_gb']:.2f} GB)  ratio {row['wall_ratio']:.2f}x (fit {row['fit_ratio']:.2f}x)",
              flush=True)
    med = {"wall_ratio": statistics.median(r["wall_ratio"] for r in out),
           "fit_ratio": statistics.median(r["fit_ratio"] for r in out)}
    print(f"  median ratio shipped / previous: {med['wall_ratio']:.2f}x end to end, {med['fit_ratio']:.2f}x fit")
    return {"rounds": out, "median": med}


def _fresh_run(args: list[str], env: dict[str, str]) -> tuple[float, float, list[dict]]:
    """:func:`run_cli`, with this child's own peak RSS (``wait4``), not the largest child's so far."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "featurestore", *args, "--json", "--quiet"], env=env,
                                stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"featurestore run failed:\n{err.read()}")
        return wall, usage.ru_maxrss / 1e6, json.loads(out.read())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500k events instead of 5M")
    ap.add_argument("--gensim-epochs", type=int, default=5, help="gensim epochs (default 5, its default)")
    ap.add_argument("--skip-gensim", action="store_true", help="leave the peer out")
    ap.add_argument("--against-previous", type=int, default=0, metavar="N",
                    help="also N alternating rounds against the previous default model (first runs)")
    args = ap.parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = purchase_histories(**size, seed=0)
        events = Path(tmp) / "events.parquet"
        pq.write_table(data.events, events)
        root = Path(tmp) / "store"
        env = {**os.environ, "FEATURESTORE_EVENTS": str(events)}
        subprocess.run([sys.executable, "-m", "featurestore", "apply", str(REPO / "schemas"), "--root", str(root)],
                       check=True, env=env, capture_output=True)
        day2 = data.end.replace(hour=0, minute=0, second=0, microsecond=0)
        day1 = day2.replace(day=day2.day - 1)
        pipeline = str(REPO / "pipelines" / "purchase_embeddings.py")
        for label, cutoff in (("first run", day1), ("next day (retrain + align)", day2), ("re-run (no-op)", day2)):
            wall, rss, res = run_cli(["run", pipeline, "--cutoff", cutoff.isoformat(), "--root", str(root)], env)
            r = res[0]
            rows.append({"run": label, "wall_s": wall, "peak_rss_gb": rss, "events": r["events"],
                         "items": r["items"], "entities": r["entities_written"], "status": r["status"],
                         "stages": r["seconds"], "alignment": r["alignment"]})
            print(f"{label:28} {wall:6.1f}s  peak RSS {rss:4.2f} GB  {r['events']:,} events  "
                  f"{r['items']:,} items  {r['entities_written']:,} users  {r['status']}  "
                  + " ".join(f"{k} {v:.1f}s" for k, v in r["seconds"].items()), flush=True)

        peer = None
        python = peers_python()
        if args.skip_gensim:
            print("gensim: skipped (--skip-gensim)")
        elif python is None:
            print("gensim: no peers interpreter (set FEATURESTORE_PEERS_PYTHON or run `make peers`)")
        else:
            from featurestore.engine.counting import sequence_tokens

            ev = read_events(EventSource(str(events)), before=day1, weights=WEIGHTS)
            ent, item, _, _ = sequence_tokens(ev)
            corpus = Path(tmp) / "corpus.txt"
            with open(corpus, "w") as f:
                for seq in np.split(item, np.flatnonzero(np.diff(ent)) + 1):
                    f.write(" ".join(map(str, seq.tolist())) + "\n")
            params = {"dim": 64, "epochs": args.gensim_epochs, "min_count": 1, "sample": 1e-3, "workers": 2}
            proc = subprocess.run([python, str(HERE / "_gensim_item2vec.py"), str(corpus), str(Path(tmp) / "g.npz"),
                                   json.dumps(params)], capture_output=True, text=True, check=True)
            peer = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"gensim item2vec fit alone ({args.gensim_epochs} epochs): {peer['fit_seconds']:.1f}s")
        previous = against_previous(args.against_previous, Path(tmp), day1, env) if args.against_previous else None
    first = rows[0]
    summary = {"events": first["events"], "end_to_end_s": first["wall_s"], "peak_rss_gb": first["peak_rss_gb"],
               "gensim_fit_s": peer["fit_seconds"] if peer else None,
               "speedup_vs_gensim_fit": (peer["fit_seconds"] / first["wall_s"]) if peer else None,
               "against_previous": previous}
    print()
    print(f"{'figure':44} {'value':>12}")
    print(f"{'end to end, ' + format(first['events'], ',') + ' events':44} {first['wall_s']:11.1f}s")
    print(f"{'peak RSS':44} {first['peak_rss_gb']:10.2f}GB")
    if peer:
        print(f"{'gensim item2vec fit alone':44} {peer['fit_seconds']:11.1f}s")
        print(f"{'speed-up (gensim fit / our end to end)':44} {summary['speedup_vs_gensim_fit']:11.1f}x")
    out = HERE / "results" / "pipeline.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"date": datetime.now(UTC).isoformat(), "machine": platform.platform(),
                               "cpus": os.cpu_count(), "size": size, "runs": rows, "summary": summary}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
