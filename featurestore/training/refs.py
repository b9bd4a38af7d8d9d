"""Feature references: which feature group version, and which of its columns, a training set reads."""

from __future__ import annotations

import re
from dataclasses import dataclass

from featurestore.errors import InvalidData

_REF = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)(?::(?P<version>\d+))?(?::(?P<columns>[A-Za-z0-9_,\s]+))?$")


@dataclass(frozen=True)
class FeatureRef:
    """One feature group version and the columns taken from it, as ``name[:version][:col,col]``."""

    name: str
    version: int | None = None
    columns: tuple[str, ...] | None = None  # None: every feature column

    @classmethod
    def parse(cls, ref: str | FeatureRef) -> FeatureRef:
        if isinstance(ref, FeatureRef):
            return ref
        m = _REF.match(ref.strip()) if isinstance(ref, str) else None
        if m is None:
            raise InvalidData(f"bad feature reference {ref!r}: expected 'name', 'name:version' or "
                              "'name:version:col1,col2' (e.g. 'user_embeddings:1:embedding')")
        cols = tuple(c.strip() for c in m["columns"].split(",") if c.strip()) if m["columns"] else None
        return cls(m["name"], int(m["version"]) if m["version"] else None, cols or None)

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"
