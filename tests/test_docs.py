"""Docs that run: every fenced code block of README.md and docs/**/*.md is a test (id ``file:line``).

How each block runs, by its language tag:

- ``python``: executed in order, one namespace per Markdown file (a later block sees an earlier block's
  names), in that file's working directory (below), with the file's shell environment in ``os.environ``.
- ``bash`` / ``sh`` / ``console``: the block is one bash script (``set -eo pipefail``), so any command
  that exits nonzero fails the test. In ``console`` blocks only lines starting with ``$ `` (and their
  ``\\`` continuation lines) are commands; the other lines are output and are not compared. Variables a
  block exports are seen by the file's later blocks, as in one terminal session.
- ``yaml``: a feature-group spec (it has ``name``, ``version`` and ``entity_keys``) must load with
  :func:`featurestore.schema.load_spec` (written to ``<name>.v<version>.yaml``); other YAML must parse.
- ``json``: must parse.
- ``crontab``: each entry's five schedule fields are checked and its command is run with bash (``\\%``
  unescaped as cron does); ``NAME=value`` lines set the entries' environment.
- ``text``: output, never run. A block without a language tag fails: tag it (``text`` for output).

The working directory of a file is a fresh temporary folder laid out like a checkout after
``featurestore demo --small``: ``featurestore_data/`` (a copy of a store the small demo built once per
session, two daily pipeline runs), ``events/events.parquet`` (the demo's events), the repository's
``schemas/`` and ``pipelines/``, and ``.venv`` (a link to the running interpreter's environment). Shell
commands find ``featurestore`` and ``python`` first on ``PATH`` (both run the interpreter running the
tests, ``featurestore`` as ``python -m featurestore``), with ``PYTHONPATH`` set to this repository, so
they run this checkout's code; ``FEATURESTORE_ROOT`` is set to the copy.

Substitutions, so examples read like a user's and still run side by side with other test runs:
the port ``8000`` (written ``:8000`` or ``--port 8000``) becomes a free port, one per file; and
``/srv/featurestore`` (the checkout path in the operations examples) becomes the working directory.

Markers: an HTML comment on the line before a fence (blank lines between are allowed) changes how it runs.
Keep them few:

- ``<!-- docs: background -->`` (shell blocks): the script is started in the background and left
  running until the file's last block is done. When it runs ``featurestore serve``, the test waits
  until ``GET /health`` answers on 127.0.0.1 at the served port.
- ``<!-- docs: not-run (reason) -->``: allowed only for shell blocks made of ``make`` commands (``make
  test`` would run this test suite from inside itself, ``make bench`` takes many minutes), and for
  Python that needs a scheduler that is not installed (an Airflow DAG): such a Python block is
  compiled, not run. Crontab entries need no marker: their commands run (see ``crontab`` above).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
DOC_FILES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
VENV_BIN = Path(sys.executable).parent
CHECKOUT = "/srv/featurestore"
PORT = re.compile(r"(?<=:)8000\b|(?<=--port )8000\b")
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)\s*$")
MARKER = re.compile(r"^\s*<!--\s*docs:\s*(?P<kind>[\w-]+)\s*(?:\((?P<reason>[^)]*)\))?\s*-->\s*$")
SHELL = {"bash", "sh", "shell", "console"}
SHOWN = {"text"}
CRON_FIELD = re.compile(r"^[\d*/,\-]+$")


@dataclass
class Block:
    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    marker: str | None = None
    reason: str | None = None
    index: int = 0  # position among its file's blocks

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def parse_blocks(path: Path) -> list[Block]:
    """The fenced code blocks of one Markdown file, each with the marker comment before it (if any)."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, indent = m["fence"], len(m["indent"])
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not (lines[i].strip().startswith(fence[0] * len(fence))
                                      and set(lines[i].strip()) == {fence[0]}):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1
        marker = reason = None
        j = start - 1
        while j >= 0 and not lines[j].strip():
            j -= 1
        if j >= 0 and (mm := MARKER.match(lines[j])):
            marker, reason = mm["kind"], mm["reason"]
        blocks.append(Block(path, start + 1, m["lang"].lower(), "\n".join(body) + "\n", marker, reason,
                            len(blocks)))
    return blocks


BLOCKS = [b for p in DOC_FILES if p.exists() for b in parse_blocks(p)]
RUN = [b for b in BLOCKS if b.lang not in SHOWN]  # output blocks are no tests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FileContext:
    """One Markdown file's working directory, shell environment, Python namespace and servers."""

    path: Path
    wd: Path
    env: dict[str, str]
    port: int
    blocks: list[Block]
    ns: dict[str, Any] = field(default_factory=dict)
    done: int = 0  # blocks run so far (in order)
    procs: list[tuple[subprocess.Popen[bytes], Path]] = field(default_factory=list)

    def substitute(self, code: str) -> str:
        return PORT.sub(str(self.port), code).replace(CHECKOUT, str(self.wd))

    def close(self) -> None:
        for proc, _log in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=5)
        self.procs.clear()


class DocsSession:
    """The demo store (built once) and a context per Markdown file (built when its first block runs)."""

    def __init__(self, base: Path):
        self.base = base
        self.demo = base / "demo-store"
        self.contexts: dict[Path, FileContext] = {}
        self.bin = base / "bin"
        self.bin.mkdir()
        for name, command in (("featurestore", f'"{sys.executable}" -m featurestore'),
                              ("python", f'"{sys.executable}"')):
            script = self.bin / name
            script.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
            script.chmod(0o755)
        env = self.base_env()
        env["FEATURESTORE_ROOT"] = str(self.demo)
        proc = subprocess.run([str(self.bin / "featurestore"), "demo", "--small", "--root", str(self.demo), "--quiet",
                               "--days", "2"],
                              cwd=base, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise RuntimeError(f"the small demo failed:\n{proc.stdout}\n{proc.stderr}")

    def base_env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PATH"] = os.pathsep.join([str(self.bin), str(VENV_BIN), env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
        env.pop("FEATURESTORE_TOKEN", None)
        env.pop("FEATURESTORE_EVENTS", None)
        return env

    def context(self, path: Path) -> FileContext:
        ctx = self.contexts.get(path)
        if ctx is None:
            wd = Path(tempfile.mkdtemp(prefix=re.sub(r"\W", "-", path.stem) + "-", dir=self.base))
            root = wd / "featurestore_data"
            shutil.copytree(self.demo, root, symlinks=True)
            (wd / "events").mkdir()
            shutil.copy2(root / "_demo_events" / "events.parquet", wd / "events" / "events.parquet")
            for folder in ("schemas", "pipelines"):
                shutil.copytree(REPO / folder, wd / folder,
                                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            (wd / ".venv").symlink_to(VENV_BIN.parent)
            env = self.base_env()
            env["FEATURESTORE_ROOT"] = str(root)
            env["HOME"] = str(wd)  # nothing a block writes lands in the real home folder
            ctx = self.contexts[path] = FileContext(path, wd, env, free_port(),
                                                    [b for b in BLOCKS if b.path == path])
        return ctx

    def close(self) -> None:
        for ctx in self.contexts.values():
            ctx.close()


@pytest.fixture(scope="session")
def docs() -> Any:
    with tempfile.TemporaryDirectory(prefix="featurestore-docs-") as base:
        session = DocsSession(Path(base))
        try:
            yield session
        finally:
            session.close()


# ---- running one block --------------------------------------------------------------------------------
def shell_script(block: Block) -> str:
    if block.lang != "console":
        return block.code
    out, more = [], False
    for line in block.code.splitlines():
        if line.startswith("$ ") or more:
            out.append(line[2:] if line.startswith("$ ") and not more else line)
            more = line.rstrip().endswith("\\")
    return "\n".join(out) + "\n"


def run_shell(ctx: FileContext, block: Block) -> None:
    script = ctx.substitute(shell_script(block))
    if block.marker == "background":
        start_background(ctx, block, script)
        return
    env_file = ctx.wd / ".docs-env"
    full = f"set -eo pipefail\n{script}\nenv -0 > {env_file}\n"
    proc = subprocess.run(["bash", "-c", full], cwd=ctx.wd, env=ctx.env, capture_output=True, text=True,
                          timeout=180)
    if proc.returncode != 0:
        pytest.fail(f"{block.id}: exit code {proc.returncode}\n--- script\n{script}--- stdout\n{proc.stdout}"
                    f"--- stderr\n{proc.stderr}", pytrace=False)
    env = dict(item.split("=", 1) for item in env_file.read_text().split("\0") if "=" in item)
    for name in ("_", "SHLVL", "PWD", "OLDPWD"):
        env.pop(name, None)
    ctx.env = env


def start_background(ctx: FileContext, block: Block, script: str) -> None:
    log = ctx.wd / f".docs-background-{block.line}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["bash", "-c", f"set -eo pipefail\n{script}"], cwd=ctx.wd, env=ctx.env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    ctx.procs.append((proc, log))
    if "featurestore serve" not in script:
        return
    m = re.search(r"--port[ =](\d+)", script)
    url = f"http://127.0.0.1:{m[1] if m else 8000}/health"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"{block.id}: the server exited ({proc.returncode}):\n{log.read_text()}", pytrace=False)
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"{block.id}: {url} did not answer within 90 s:\n{log.read_text()}", pytrace=False)


def run_python(ctx: FileContext, block: Block) -> None:
    code = compile("\n" * block.line + ctx.substitute(block.code), str(block.path), "exec")
    if block.marker == "not-run":
        return  # compiled above: it needs a scheduler that is not installed here
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    os.environ.clear()
    os.environ.update(ctx.env)
    os.chdir(ctx.wd)
    try:
        exec(code, ctx.ns)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)


def check_yaml(ctx: FileContext, block: Block) -> None:
    import yaml

    doc = yaml.safe_load(block.code)
    if isinstance(doc, dict) and {"name", "version", "entity_keys"} <= set(doc):
        from featurestore.schema import load_spec

        folder = Path(tempfile.mkdtemp(dir=ctx.wd))
        path = folder / f"{doc['name']}.v{doc['version']}.yaml"
        path.write_text(block.code)
        spec = load_spec(path)
        assert (spec.name, spec.version) == (doc["name"], doc["version"])


def check_crontab(ctx: FileContext, block: Block) -> None:
    env = dict(ctx.env)
    entries = 0
    for raw in ctx.substitute(block.code).splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*\s*=", line):
            name, value = line.split("=", 1)
            env[name.strip()] = value.strip().strip('"')
            continue
        parts = line.split(None, 5)
        assert len(parts) == 6 and all(CRON_FIELD.match(p) for p in parts[:5]), f"not a crontab entry: {line}"
        command = parts[5].replace("\\%", "%")
        proc = subprocess.run(["bash", "-c", command], cwd=ctx.wd, env=env, capture_output=True, text=True,
                              timeout=180)
        assert proc.returncode == 0, f"{command}\nexit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        entries += 1
    assert entries, "a crontab block without entries"


def run_block(ctx: FileContext, block: Block) -> None:
    lang = block.lang
    if block.marker not in (None, "background", "not-run"):
        pytest.fail(f"{block.id}: unknown marker {block.marker!r} (see tests/test_docs.py)", pytrace=False)
    if block.marker == "background" and lang not in SHELL:
        pytest.fail(f"{block.id}: only shell blocks run in the background", pytrace=False)
    if block.marker == "not-run":
        if not block.reason:
            pytest.fail(f"{block.id}: a not-run marker needs a reason: <!-- docs: not-run (why) -->", pytrace=False)
        commands = [c.strip() for c in shell_script(block).splitlines() if c.strip() and not c.strip().startswith("#")]
        if lang in SHELL:
            if not all(c.startswith("make ") for c in commands):
                pytest.fail(f"{block.id}: only make commands may be not-run; run the others", pytrace=False)
            return
        if lang not in ("python", "py"):
            pytest.fail(f"{block.id}: not-run is for make commands and scheduler-only Python", pytrace=False)
    if lang in ("python", "py"):
        run_python(ctx, block)
    elif lang in SHELL:
        run_shell(ctx, block)
    elif lang in ("yaml", "yml"):
        check_yaml(ctx, block)
    elif lang == "json":
        json.loads(block.code)
    elif lang == "crontab":
        check_crontab(ctx, block)
    elif lang in SHOWN:
        return
    elif not lang:
        pytest.fail(f"{block.id}: a code block without a language; use ```text for output", pytrace=False)
    else:
        pytest.fail(f"{block.id}: no runner for ```{lang} blocks (see tests/test_docs.py)", pytrace=False)


@pytest.mark.parametrize("block", RUN, ids=[b.id for b in RUN])
def test_doc_block(block: Block, docs: DocsSession) -> None:
    ctx = docs.context(block.path)
    try:
        # a block is run after every earlier block of its file (also when it is selected alone)
        while ctx.done < block.index:
            earlier = ctx.blocks[ctx.done]
            ctx.done += 1
            try:
                run_block(ctx, earlier)
            except BaseException as exc:
                pytest.fail(f"{block.id}: an earlier block of this file, {earlier.id}, failed: {exc}",
                            pytrace=False)
        if ctx.done == block.index:
            ctx.done += 1
            run_block(ctx, block)
    finally:
        if all(b.lang in SHOWN for b in ctx.blocks[ctx.done:]):  # the file's last test: stop its servers
            ctx.close()


def test_docs_are_found() -> None:
    """The runner sees the README and the docs folder (a moved or renamed page must not go unchecked)."""
    names = {b.path.name for b in BLOCKS}
    assert "README.md" in names
    assert any(b.path.parent.name == "docs" for b in BLOCKS)


def test_markers_are_rare() -> None:
    marked = [b.id for b in BLOCKS if b.marker]
    # 3 of them are Spark cluster examples (docs/scale-out.md): a cluster and Airflow are not here
    assert len(marked) <= 9, f"keep docs markers few: {marked}"


def test_readme_is_the_front_door() -> None:
    """The README stays short (details live in docs/) and keeps the two commands."""
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 200
    assert "make demo" in text and "make test" in text
