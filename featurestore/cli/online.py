"""Online-serving commands: materialize, serve, lookup, nearest."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

import numpy as np

from featurestore.cli._common import (
    CLIError,
    command,
    commit_options,
    open_store,
    parse_commit,
    parse_time,
    print_json,
    print_table,
)
from featurestore.online.build import materialize
from featurestore.online.open import resolve_commit
from featurestore.server.app import serve
from featurestore.server.client import Client
from featurestore.server.reload import ReloadPolicy
from featurestore.server.wire import Limits


def register(sub: Any) -> None:
    p = command(sub, "materialize", "Build the online view of a feature group's newest (or given) commit.",
                "featurestore materialize item_embeddings --version 1")
    p.add_argument("name")
    p.add_argument("--version", type=int, default=None, help="feature group version (default: newest)")
    commit_options(p)
    p.add_argument("--force", action="store_true", help="rebuild even when the view exists")
    p.add_argument("--json", action="store_true", help="print the view's manifest as JSON")
    p.set_defaults(func=cmd_materialize)

    p = command(sub, "serve", "Serve lookups and similarity search over HTTP, reloading new commits.",
                "featurestore serve --port 8000 --group item_embeddings --group user_embeddings:1")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; others need a token)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--token", default=None,
                   help="bearer token clients must send (default: $FEATURESTORE_TOKEN)")
    p.add_argument("--group", action="append", default=[], metavar="NAME[:VERSION]",
                   help="serve this feature group (repeatable; default: all, newest versions)")
    p.add_argument("--reload-interval", type=float, default=5.0,
                   help="seconds between checks for new commits (0 disables hot reload)")
    p.add_argument("--min-recall", type=float, default=0.9,
                   help="refuse a reloaded view whose approximate recall@10 is below this")
    p.add_argument("--max-keys", type=int, default=10_000, help="keys per lookup / queries per batch")
    p.add_argument("--max-k", type=int, default=1_000, help="largest k for nearest")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    p.set_defaults(func=cmd_serve)

    p = command(sub, "lookup", "Look up entity keys in an online view, or entities in a feature service "
                "(--service), locally or on a server (--url); exit code 1 when a key is missing.",
                "featurestore lookup item_embeddings i1 i2 --columns n_events\n"
                "  featurestore lookup user_day u1,3          # a composite key: its parts, comma-separated\n"
                "  featurestore lookup --service ranking user_id=u1,day=3 user_id=u2,day=1")
    p.add_argument("name", help="feature group (with --service: the first entity)")
    p.add_argument("keys", nargs="*", help="entity keys (integers for int64-keyed groups; a composite key as its "
                                           "parts, comma-separated); with --service: entities as field=value,...")
    _view_options(p)
    p.add_argument("--columns", default=None, help="comma-separated scalar columns to show")
    p.add_argument("--features", default=None, help="comma-separated features to show (default: all)")
    p.add_argument("--service", default=None, metavar="NAME", help="look up entities in this feature service")
    p.set_defaults(func=cmd_lookup)

    p = command(sub, "nearest", "The k most similar rows to a key's or a given vector (higher score = closer).",
                "featurestore nearest item_embeddings --key i1 --k 5 --exclude i1 "
                "--filter '{\"n_events\": {\"ge\": 3}}'")
    p.add_argument("name")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--key", default=None, help="query with this key's vector")
    src.add_argument("--vector", default=None, help="query vector: comma-separated numbers or a JSON list")
    p.add_argument("--query-group", default=None, metavar="NAME",
                   help="look --key up in this feature group instead (e.g. a user against items)")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--filter", default=None, help='JSON filter, e.g. {"n_events": {"ge": 5}}')
    p.add_argument("--exclude", nargs="*", default=[], help="keys never returned")
    p.add_argument("--exact", action="store_true", help="exact search even when an approximate index exists")
    _view_options(p)
    p.set_defaults(func=cmd_nearest)


def _view_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", type=int, default=None, help="feature group version (default: newest)")
    commit_options(p)
    p.add_argument("--url", default=None, help="ask a running server instead of opening the store")
    p.add_argument("--token", default=None, help="bearer token for --url (default: $FEATURESTORE_TOKEN)")
    p.add_argument("--json", action="store_true", help="print JSON")


def _open_view(args: argparse.Namespace, name: str, check: Any = None) -> Any:
    """The view to ask: a running server's (``--url``) or the store's. ``check(spec)`` runs first on a
    local store, so a malformed request is refused before any view is built (a query never writes
    unless the view is missing, and never for a request it refuses)."""
    if args.url:
        if args.commit is not None or args.commit_time is not None or args.version is not None:
            raise CLIError("--commit, --commit-time and --version pin a local view; a server serves what it "
                           "serves")
        return Client(args.url, token=args.token or os.environ.get("FEATURESTORE_TOKEN")).view(name)
    store = open_store(args)
    commit, commit_time = parse_commit(args.commit), parse_time(args.commit_time, "--commit-time")
    if check is not None:
        check(store, store.feature_group(name, args.version).spec)
    return store.online(name, args.version, commit, commit_time=commit_time)


def _keys(args: argparse.Namespace, view: Any, raw: list[str]) -> list[Any]:
    info = view.info()
    if info.get("key_type") == "composite":
        return [_composite(args, info["key_types"], k) for k in raw]
    return _typed_keys(args, info.get("key_type"), raw)


def _composite(args: argparse.Namespace, types: list[str], raw: str) -> tuple[Any, ...]:
    parts = raw.split(",")
    if len(parts) != len(types):
        raise CLIError(f"{args.name} has a composite key of {len(types)} parts ({', '.join(types)}): give each "
                       f"key as its parts, comma-separated; got {raw!r}")
    return tuple(_typed_keys(args, t, [p])[0] for t, p in zip(types, parts))


def _typed_keys(args: argparse.Namespace, key_type: str | None, raw: list[str]) -> list[Any]:
    if key_type == "int64":
        try:
            return [int(k) for k in raw]
        except ValueError as exc:
            raise CLIError(f"{args.name} has integer keys: {exc}") from exc
    return raw


def cmd_materialize(args: argparse.Namespace) -> int:

    logging.getLogger("featurestore.online").setLevel(logging.INFO)
    store = open_store(args)
    fg = store.feature_group(args.name, args.version)
    c = resolve_commit(fg, parse_commit(args.commit), parse_time(args.commit_time, "--commit-time"))
    t = time.perf_counter()
    out = sys.stderr if args.json else sys.stdout  # --json: stdout holds only the JSON
    path = materialize(fg, c, force=args.force, progress=lambda m: print(f"  {m}", file=out, flush=True))
    manifest = json.loads((path / "manifest.json").read_text())
    if args.json:
        print_json({**manifest, "path": str(path)})
    else:
        idx = manifest["index"]
        extra = f", {idx['kind']} breadth {idx['breadth']} recall@10 {idx['recall_at_10']:.3f}" \
            if idx["kind"] != "flat" else ", exact search"
        print(f"{fg.spec.key} commit {c}: {manifest['rows']:,} rows x {manifest['dim']}{extra} "
              f"({time.perf_counter() - t:.1f}s)\n  {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:

    groups = None
    if args.group:
        groups = []
        for g in args.group:
            name, _, version = g.partition(":")
            if version and not version.isdigit():
                raise CLIError(f"--group takes NAME or NAME:VERSION; got {g!r}")
            groups.append((name, int(version) if version else None))
    logging.getLogger("featurestore").setLevel(getattr(logging, args.log_level.upper()))
    serve(open_store(args), host=args.host, port=args.port, token=args.token, groups=groups,
          limits=Limits(max_keys=args.max_keys, max_k=args.max_k),
          policy=ReloadPolicy(interval=args.reload_interval, min_recall=args.min_recall),
          log_level=args.log_level)
    return 0


def _key_type(spec: Any) -> str:
    if len(spec.entity_keys) != 1:
        raise CLIError(f"{spec.key} has a composite key ({', '.join(spec.key_names)}); nearest takes one key column "
                       f"(use the HTTP API or the library for composite keys)")
    return str(spec.entity_keys[0].type)


def _check_keys(args: argparse.Namespace, spec: Any) -> None:
    """Refuse malformed keys before a view is opened (or built)."""
    if not args.keys:
        raise CLIError("give at least one key")
    if len(spec.entity_keys) > 1:
        for k in args.keys:
            _composite(args, [e.type for e in spec.entity_keys], k)
    else:
        _typed_keys(args, spec.entity_keys[0].type, args.keys)


def cmd_lookup(args: argparse.Namespace) -> int:
    if args.service:
        return cmd_service_lookup(args)
    view = _open_view(args, args.name, check=lambda _, spec: _check_keys(args, spec))
    try:
        return _lookup(args, view)
    finally:
        _close(view)


def _close(view: Any) -> None:
    client = getattr(view, "client", None)
    if client is not None:
        client.close()


def _lookup(args: argparse.Namespace, view: Any) -> int:
    cols = [c for c in args.columns.split(",") if c] if args.columns else None
    feats = [f for f in args.features.split(",") if f] if args.features else None
    hit = view.get(_keys(args, view, args.keys), columns=cols, features=feats)
    if args.json:
        print_json({"keys": hit.keys, "found": hit.found.tolist(), "missing": hit.missing,
                    "vectors": [v.tolist() if ok else None for v, ok in zip(hit.vectors, hit.found)],
                    "columns": hit.columns, "features": {k: _plain(v, hit.found) for k, v in hit.features.items()}})
    else:
        shown = [f for f in hit.features if f not in (cols or [])
                 and (feats is not None or not isinstance(hit.features[f], np.ndarray))]
        headers = ["key", "found", *(cols or []), *shown, *(["vector"] if hit.vectors.shape[1] else [])]
        rows = [[k, bool(ok), *(hit.columns[c][i] for c in cols or []),
                 *(_cell(hit.features[f], i, ok) for f in shown),
                 *([v.tolist() if ok else None] if hit.vectors.shape[1] else [])]
                for i, (k, ok, v) in enumerate(zip(hit.keys, hit.found, hit.vectors))]
        print_table(headers, rows)
    return 0 if not hit.missing else 1


def _plain(values: Any, found: np.ndarray) -> Any:
    if isinstance(values, np.ndarray):
        return [v.tolist() if ok else None for v, ok in zip(values, found)]
    return values


def _cell(values: Any, i: int, ok: Any) -> Any:
    if isinstance(values, np.ndarray):
        return values[i].tolist() if ok else None
    return values[i]


def cmd_service_lookup(args: argparse.Namespace) -> int:
    """``lookup --service``: entities (field=value,...) through a feature service, locally or on a server."""
    raw = [args.name, *args.keys]
    if args.url:
        if args.commit is not None or args.commit_time is not None or args.version is not None:
            raise CLIError("--commit, --commit-time and --version do not apply to a service")
        with Client(args.url, token=args.token or os.environ.get("FEATURESTORE_TOKEN")) as client:
            remote = client.service(args.service)
            types = remote.info()["entity_types"]
            ans = remote.get([_entity(args, types, r) for r in raw])
    else:
        if args.commit is not None or args.commit_time is not None or args.version is not None:
            raise CLIError("--commit, --commit-time and --version do not apply to a service: it serves the "
                           "newest commit of each group it names")
        svc = open_store(args).service(args.service)
        ans = svc.get([_entity(args, svc.snapshot.field_types(), r) for r in raw])
    _print_service(args, ans)
    return 0 if all(m.all() for m in ans.found.values()) else 1


def _entity(args: argparse.Namespace, types: dict[str, str], raw: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in raw.split(","):
        field, eq, value = item.partition("=")
        if not eq or field not in types:
            raise CLIError(f"service {args.service} takes entities as {','.join(f + '=...' for f in types)}; "
                           f"got {raw!r}")
        out[field] = _typed_keys(args, types[field], [value])[0]
    missing = [f for f in types if f not in out]
    if missing:
        raise CLIError(f"entity {raw!r} lacks {', '.join(missing)} (service {args.service} needs "
                       f"{', '.join(types)})")
    return out


def _print_service(args: argparse.Namespace, ans: Any) -> None:
    parts = [p.to_dict() for p in ans.parts]
    if args.json:
        doc: dict[str, Any] = {"service": ans.service, "parts": parts, "entities": ans.entities,
                               "found": {g: m.tolist() for g, m in ans.found.items()},
                               "features": {k: _plain(v, ~np.isnan(v[:, 0]) if v.shape[1] else np.ones(len(v), bool))
                                            if isinstance(v, np.ndarray) else v for k, v in ans.features.items()}}
        if ans.neighbors is not None:
            doc["neighbors"] = [{"keys": c.keys, "scores": c.scores.tolist(),
                                 "features": {k: _plain(v, np.ones(len(c), bool)) for k, v in c.features.items()}}
                                for c in ans.neighbors]
        print_json(doc)
        return
    print("parts: " + ", ".join(f"{p['feature_group']}:{p['version']}@c{p['commit']}" for p in parts))
    names = list(ans.features)
    rows = []
    for i in range(len(ans)):
        rows.append([*(v[i] for v in ans.entities.values()),
                     *(_cell(ans.features[f], i, ans.found[f.split("__")[0]][i]) for f in names)])
    print_table([*ans.entities, *names], rows)
    for i, c in enumerate(ans.neighbors or []):
        near = ", ".join(f"{k} ({s:.3f})" for k, s in zip(c.keys, c.scores.tolist())) or "(none)"
        print(f"entity {i}: nearest {near}")


def _check_nearest(args: argparse.Namespace, store: Any, spec: Any) -> None:
    """Refuse a malformed nearest request before a view is opened (or built)."""
    if args.k < 1:
        raise CLIError(f"--k must be at least 1; got {args.k}")
    _typed_keys(args, _key_type(spec), args.exclude)
    if args.key is not None:
        key_spec = store.feature_group(args.query_group).spec if args.query_group else spec
        _typed_keys(args, _key_type(key_spec), [args.key])
    if args.vector is not None:
        dims = {f.dim for f in spec.vector_features}
        got = len(_vector(args) or [])
        if got not in dims:
            want = "/".join(map(str, sorted(d for d in dims if d)))
            raise CLIError(f"--vector has {got} numbers; {spec.key} serves {want}-d vectors ({want} numbers)")
    _filter(args)


def _filter(args: argparse.Namespace) -> Any:
    if not args.filter:
        return None
    try:
        return json.loads(args.filter)
    except ValueError as exc:
        raise CLIError(f"--filter must be JSON: {exc}") from exc


def _vector(args: argparse.Namespace) -> list[float] | None:
    if args.vector is None:
        return None
    text = args.vector.strip()
    try:
        values = json.loads(text) if text.startswith("[") else [float(x) for x in text.split(",")]
    except ValueError as exc:
        raise CLIError(f"--vector takes comma-separated numbers or a JSON list: {exc}") from exc
    if not isinstance(values, list):
        raise CLIError("--vector takes comma-separated numbers or a JSON list")
    return values


def cmd_nearest(args: argparse.Namespace) -> int:
    view = _open_view(args, args.name, check=lambda store, spec: _check_nearest(args, store, spec))
    try:
        return _nearest(args, view)
    finally:
        _close(view)


def _nearest(args: argparse.Namespace, view: Any) -> int:
    flt, vector = _filter(args), _vector(args)
    exclude = _keys(args, view, args.exclude)
    kw: dict[str, Any] = {"k": args.k, "filter": flt, "exclude": exclude, "exact": args.exact}
    if args.url:
        source = view.client.view(args.query_group) if args.query_group else view
        res = view.nearest(vector, key=_one_key(args, source), query_view=args.query_group, **kw)
    else:
        qv = None
        if args.query_group:
            qv = open_store(args).online(args.query_group)
        res = view.nearest(vector, key=_one_key(args, qv or view), query_view=qv, **kw)
    if args.json:
        print_json({"keys": res.keys, "scores": np.asarray(res.scores).tolist(), "exact": res.exact})
    else:
        rows = [[i + 1, k, float(s)] for i, (k, s) in enumerate(zip(res.keys, res.scores))]
        print_table(["rank", "key", "score"], rows)
    return 0


def _one_key(args: argparse.Namespace, view: Any) -> Any:
    if args.key is None:
        return None
    return _keys(args, view, [args.key])[0]
