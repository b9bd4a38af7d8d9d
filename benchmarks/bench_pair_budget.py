"""What the co-occurrence pair budget (``DuckDBEngine(max_pairs=)``) does to quality: the default embedder
fitted on the full counts and on counts pruned to each item's strongest pairs, next-item HR@10 / NDCG@10
on bench_quality's synthetic sets (leave-last-out, all items ranked, history excluded).

    python benchmarks/bench_pair_budget.py                        # small and 5M, budgets 50/20/10/5% of the pairs
    python benchmarks/bench_pair_budget.py --scales small --fractions 0.5,0.25,0.1,0.05

Results: a table on stdout, JSON in benchmarks/results/pair_budget.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from benchmarks._util import report  # noqa: E402
from benchmarks.bench_quality import SCALES, Task, embedding_scorer, evaluate, split_last  # noqa: E402
from featurestore.embed import CooccurrenceEmbedder  # noqa: E402
from featurestore.engine import DuckDBEngine  # noqa: E402
from featurestore.engine.counting import per_item  # noqa: E402
from featurestore.engine.events import EventSource  # noqa: E402
from featurestore.pipeline import Pipeline  # noqa: E402
from featurestore.synthetic import purchase_histories  # noqa: E402


def run(name: str, fractions: list[float], n_eval: int, seed: int) -> list[dict]:
    data = purchase_histories(**SCALES[name], seed=seed)
    train, test = split_last(data.events)
    task = Task(train, test, n_eval, seed)
    agg = Pipeline("shipped", EventSource(train)).aggregation
    rows: list[dict] = []
    full = None
    for frac in [None, *fractions]:
        budget = None if frac is None else max(1, int(full * frac))  # type: ignore[operator]
        t = time.perf_counter()
        model = CooccurrenceEmbedder().fit(task.events, engine=DuckDBEngine(max_pairs=budget))
        fit = time.perf_counter() - t
        full = full or model.info["pairs_nnz"]
        m = evaluate(task, embedding_scorer(task, model, agg))
        row = {"set": name, "budget": budget or "none",
               "per_item": per_item(budget, task.events.n_items) if budget else "",
               "pairs": model.info["pairs_nnz"], "hr@10": round(m["hr@10"], 4), "hr_se": round(m["hr_se"], 4),
               "ndcg@10": round(m["ndcg@10"], 4), "fit_s": round(fit, 1)}
        rows.append(row)
        print(row, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scales", default="small,5M", help=f"of {sorted(SCALES)}")
    ap.add_argument("--fractions", default="0.5,0.2,0.1,0.05", help="budgets as fractions of the full pairs")
    ap.add_argument("--eval-users", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    fractions = [float(x) for x in args.fractions.split(",")]
    rows = [r for name in args.scales.split(",") for r in run(name, fractions, args.eval_users, args.seed)]
    report("pair_budget", rows, {"scales": args.scales, "fractions": fractions, "eval_users": args.eval_users,
                                 "date": datetime.now(UTC).isoformat(timespec="seconds")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
