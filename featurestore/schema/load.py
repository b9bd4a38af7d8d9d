"""Spec files: ``schemas/<name>.v<version>.yaml`` read and parsed into :class:`FeatureGroupSpec`.

:func:`load_spec` reads one file, :func:`load_specs` a folder; both check every field and raise
:class:`~featurestore.errors.SpecError` naming the file and the field at fault.

Example::

    spec = load_spec("schemas/user_embeddings.v1.yaml")
    spec.vector_features[0].dim   # 64
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from featurestore.errors import SpecError
from featurestore.schema.service import ServiceSpec
from featurestore.schema.spec import FeatureGroupSpec

_FILE = re.compile(r"^(?P<name>[a-z_][a-z0-9_]*)\.v(?P<version>\d+)\.ya?ml$")


def _read_yaml(p: Path) -> Any:
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read: {exc.strerror or exc}", path=str(p)) from exc
    except UnicodeDecodeError as exc:
        raise SpecError(f"not UTF-8 text (byte {exc.start}: {exc.object[exc.start:exc.start + 1]!r}); "
                        "save the spec as UTF-8", path=str(p)) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"not valid YAML: {exc}", path=str(p)) from exc
    return data


def load_spec(path: str | Path) -> FeatureGroupSpec:
    """Read and check one spec file. Its name must be ``<name>.v<version>.yaml`` and agree with it."""
    p = Path(path)
    spec = FeatureGroupSpec.from_dict(_read_yaml(p), source=str(p))
    m = _FILE.match(p.name)
    if m and (m["name"] != spec.name or int(m["version"]) != spec.version):
        raise SpecError(
            f"file name says {m['name']} v{m['version']} but the spec says {spec.name} v{spec.version}",
            path=str(p), field="name",
        )
    return spec


def load_specs(paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]]) -> list[FeatureGroupSpec]:
    """Load every ``*.yaml``/``*.yml`` spec in a folder (sorted), or the given file(s)."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    files: list[Path] = []
    for item in paths:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
        elif p.exists():
            files.append(p)
        else:
            raise SpecError("no such file or folder", path=str(p))
    specs = [load_spec(f) for f in files]
    seen: dict[tuple[str, int], str | None] = {}
    for s in specs:
        if (s.name, s.version) in seen:
            raise SpecError(f"{s.name} v{s.version} is also defined in {seen[(s.name, s.version)]}",
                            path=s.source, field="name")
        seen[(s.name, s.version)] = s.source
    return specs


SERVICES_DIR = "services"


def load_service(path: str | Path) -> ServiceSpec:
    """Read and check one feature-service file (``services/<name>.yaml``; the name must agree)."""
    p = Path(path)
    service = ServiceSpec.from_dict(_read_yaml(p), source=str(p))
    if p.stem != service.name:
        raise SpecError(f"file name says {p.stem} but the service is named {service.name}", path=str(p),
                        field="name")
    return service


def load_services(folder: str | Path) -> list[ServiceSpec]:
    """The feature services in ``<folder>/services/`` (none when there is no such folder), checked."""
    d = Path(folder) / SERVICES_DIR
    if not d.is_dir():
        return []
    return [load_service(f) for f in sorted([*d.glob("*.yaml"), *d.glob("*.yml")])]
