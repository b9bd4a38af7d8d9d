"""Console commands: ui (the web console), plot (the projector's map as a PNG)."""

from __future__ import annotations

import argparse
import logging
from typing import Any

from featurestore.cli._common import CLIError, command, open_store, parse_commit
from featurestore.console.plot import plot_group
from featurestore.console.projection import MAX_POINTS, METHODS
from featurestore.console.web import standalone
from featurestore.server.auth import token_for


def register(sub: Any) -> None:
    p = command(sub, "ui", "Run the web console: feature groups, commits, validation, the embedding projector.",
                "featurestore ui --port 8080")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need a token)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token", default=None,
                   help="token the console asks for (default: $FEATURESTORE_TOKEN); open the printed URL once")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    p.add_argument("--no-warm", action="store_true",
                   help="do not open the newest views and compute their maps in the background at start")
    p.set_defaults(func=cmd_ui)

    p = command(sub, "plot", "Write a PNG of the embedding projector's map of a feature group's commit.",
                "featurestore plot item_embeddings --color n_events --out items.png")
    p.add_argument("name")
    p.add_argument("--version", type=int, default=None, help="feature group version (default: newest)")
    p.add_argument("--commit", default=None, metavar="N", help="a commit number (default: the newest)")
    p.add_argument("--out", default=None, metavar="FILE",
                   help="the PNG to write (default: NAME_vVERSION_cCOMMIT.png here)")
    p.add_argument("--color", default=None, metavar="COLUMN", help="colour by this numeric column")
    p.add_argument("--method", default="pca", choices=list(METHODS), help="pca (default) or umap (umap extra)")
    p.add_argument("--points", type=int, default=MAX_POINTS, help=f"sampled rows (default {MAX_POINTS:,})")
    p.set_defaults(func=cmd_plot)


def cmd_ui(args: argparse.Namespace) -> int:
    import uvicorn

    token = token_for(args.host, args.token)
    store = open_store(args)
    app = standalone(store, token=token, warm=not args.no_warm)
    host = f"[{args.host}]" if ":" in args.host else args.host
    url = f"http://{host}:{args.port}/ui/" + (f"?token={token}" if token else "")
    print(f"featurestore console for {store.root.uri}: {url}", flush=True)
    logging.getLogger("featurestore").setLevel(getattr(logging, args.log_level.upper()))
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False,
                server_header=False)
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    if args.points < 1:
        raise CLIError("--points must be at least 1")
    store = open_store(args)
    path = plot_group(store, args.name, args.version, parse_commit(args.commit), out=args.out, color=args.color,
                      method=args.method, points=args.points)
    print(path)
    return 0
