"""great_expectations runs sealed: no network, no file written outside the store, no progress bars."""

from __future__ import annotations

import json

import pytest

from tests.conftest import ROOT, run_python

SCRIPT = r"""
import json, os, sys
events = []
def hook(event, args):
    if event == "open" and args[0] is not None and isinstance(args[0], (str, bytes, os.PathLike)):
        mode, flags = args[1], args[2]
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
        if writes:
            events.append(("write", os.fsdecode(args[0])))
    elif event in ("os.mkdir", "os.rename", "os.replace", "os.remove", "shutil.rmtree"):
        events.append((event, os.fsdecode(args[0])))
    elif event in ("socket.connect", "socket.getaddrinfo", "urllib.Request"):
        events.append((event, repr(args[:2])))
sys.addaudithook(hook)

from datetime import UTC, datetime
sys.path.insert(0, ROOT)
from featurestore import FeatureStore
from tests.conftest import item_batch, SCHEMAS
store = FeatureStore(STORE)
store.apply(SCHEMAS)
fg = store.feature_group("item_embeddings", 1)
events.clear()  # from here on: validation (great_expectations imported on first use) and the commit
fg.insert(item_batch(60), cutoff=datetime(2026, 11, 1, tzinfo=UTC))
outside = [e for e in events if not e[1].startswith(STORE) and not e[1].endswith((".pyc", "__pycache__"))
           and "__pycache__" not in e[1] and e[1] != "/dev/null"]
print(json.dumps(outside))
"""


def test_validation_writes_only_inside_the_store_and_opens_no_socket(tmp_path):
    store = str(tmp_path / "s")
    code = f"ROOT = {str(ROOT)!r}\nSTORE = {store!r}\n" + SCRIPT
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    out = run_python(code, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    assert "Calculating Metrics" not in out.stderr


@pytest.mark.parametrize("first, again, absent", [
    ("()", "()", "great_expectations"),
    # the embedder's late imports come first; a module that does not exist does not stop the rest
    ("(*CooccurrenceEmbedder.imports, 'no_such_module_here')", "CooccurrenceEmbedder.imports",
     "sklearn.utils.extmath"),
], ids=["adapter", "embedder-imports-first"])
def test_background_import_loads_the_modules_once(first: str, again: str, absent: str) -> None:
    code = ("import sys\nfrom featurestore.validation import preload\n"
            "from featurestore.embed import CooccurrenceEmbedder\n"
            f"assert {absent!r} not in sys.modules\n"
            f"t = preload.start({first})\nt.join()\n"
            f"assert {absent!r} in sys.modules and 'great_expectations' in sys.modules\n"
            f"assert preload.start({again}) is None\nprint('ok')")
    out = run_python(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
