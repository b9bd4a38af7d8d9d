"""Peer side of bench_quality: gensim Word2Vec (skip-gram, negative sampling) item2vec.

Run with the peers interpreter: python _gensim_item2vec.py CORPUS OUT.npz JSON_PARAMS
CORPUS has one line per entity: its time-ordered item tokens. Writes the vectors and the fit time.
"""

import json
import sys
import time

import numpy as np
from gensim.models import Word2Vec

corpus, out, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
t0 = time.perf_counter()
model = Word2Vec(corpus_file=corpus, vector_size=params["dim"], sg=1, negative=5, window=params.get("window", 5),
                 ns_exponent=0.75, min_count=params["min_count"], sample=params["sample"], epochs=params["epochs"],
                 workers=params.get("workers", 2), seed=params.get("seed", 1))
fit = time.perf_counter() - t0
keys = np.asarray(model.wv.index_to_key)
np.savez(out, keys=keys.astype(np.int64), vectors=model.wv.vectors.astype(np.float32), fit_seconds=fit)
print(json.dumps({"fit_seconds": fit, "vocab": len(keys)}))
