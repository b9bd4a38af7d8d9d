"""Resolve which commit a caller wants served and open (building if needed) its view."""

from __future__ import annotations

from datetime import datetime

from featurestore.errors import CommitNotFound, InvalidQuery
from featurestore.feature_group import FeatureGroup
from featurestore.online.build import materialize, view_path
from featurestore.online.view import OnlineView


def resolve_commit(fg: FeatureGroup, commit: int | None = None, as_of: datetime | None = None) -> int:
    """The commit to serve: ``commit`` if pinned, else the one current at wall-clock ``as_of``, else
    the newest."""
    if commit is not None and as_of is not None:
        raise InvalidQuery("give commit= or as_of=, not both")
    if as_of is not None:
        if not isinstance(as_of, datetime):
            raise InvalidQuery(f"as_of must be a datetime (wall-clock time); got {as_of!r}")
        return fg.commit_of(as_of)
    if commit is not None:
        if isinstance(commit, bool) or not isinstance(commit, int):
            raise InvalidQuery(f"commit must be a commit number; got {commit!r}")
        return fg.commit_of(commit)
    return fg.commit_of(None)


def open_online(fg: FeatureGroup, commit: int | None = None, as_of: datetime | None = None, *,
                build: bool = True) -> OnlineView:
    """Open the view of the resolved commit, materialising it first when ``build`` (the default)."""
    c = resolve_commit(fg, commit, as_of)
    path = view_path(fg, c)
    if not (path / "manifest.json").exists():
        if not build:
            raise CommitNotFound(f"{fg.spec.key} commit {c} has no materialised view; run "
                                 f"`featurestore materialize {fg.name} --version {fg.version} --commit {c}`")
        path = materialize(fg, c)
    return OnlineView(path)
