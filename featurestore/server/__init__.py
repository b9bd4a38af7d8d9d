"""The HTTP service: the FastAPI app (:mod:`.app`), its JSON/Arrow wire format (:mod:`.wire`), hot
reload of served views (:mod:`.reload`), Prometheus metrics (:mod:`.metrics`) and the HTTP client
(:mod:`.client`). Import the submodule you need: the client does not import FastAPI."""
