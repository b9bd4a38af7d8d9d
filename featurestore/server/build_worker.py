"""The child process a serving process starts to build and check a new view (see
:meth:`featurestore.server.reload.Registry.build`): materialise the view of one commit, open it and run
:func:`~featurestore.server.reload.check_view`, then print ``{"path": ...}`` as JSON. A failure exits 1
with the reason as the last line of stderr.

    python -m featurestore.server.build_worker ROOT NAME VERSION COMMIT MIN_RECALL SAMPLE
"""

from __future__ import annotations

import json
import sys

from featurestore.errors import FeatureStoreError
from featurestore.online.build import materialize
from featurestore.online.view import OnlineView
from featurestore.server.reload import ReloadPolicy, check_view
from featurestore.store import FeatureStore


def main(argv: list[str]) -> int:
    root, name, version, commit, min_recall, sample = argv
    store = FeatureStore(root)
    try:
        fg = store.feature_group(name, int(version))
        path = materialize(fg, int(commit))
        check_view(OnlineView(path), fg, ReloadPolicy(min_recall=float(min_recall), sample=int(sample)))
    except FeatureStoreError as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
    print(json.dumps({"path": str(path)}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
