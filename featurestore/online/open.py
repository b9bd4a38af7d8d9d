"""Resolve which commit a caller wants served and open (building if needed) its view."""

from __future__ import annotations

from datetime import datetime

from featurestore.errors import CommitNotFound, InvalidData, InvalidQuery
from featurestore.feature_group import FeatureGroup
from featurestore.online.build import fetch, materialize, view_path
from featurestore.online.view import OnlineView


def resolve_commit(fg: FeatureGroup, commit: int | None = None, commit_time: datetime | None = None) -> int:
    """The commit to serve: ``commit`` if pinned, else the one current at wall-clock ``commit_time``, else
    the newest."""
    try:
        return fg.commit_of(commit, commit_time=commit_time)
    except InvalidData as exc:
        if isinstance(exc, CommitNotFound | InvalidQuery):
            raise
        raise InvalidQuery(str(exc)) from exc


def open_online(fg: FeatureGroup, commit: int | None = None, commit_time: datetime | None = None, *,
                build: bool = True) -> OnlineView:
    """Open the view of the resolved commit, materialising it first when ``build`` (the default)."""
    c = resolve_commit(fg, commit, commit_time)
    path = view_path(fg, c)
    if not fetch(fg, c):
        if not build:
            raise CommitNotFound(f"{fg.spec.key} commit {c} has no materialised view; run "
                                 f"`featurestore materialize {fg.name} --version {fg.version} --commit {c}`")
        path = materialize(fg, c)
    return OnlineView(path)
