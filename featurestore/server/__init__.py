"""The HTTP service: the FastAPI app (:mod:`.app`: wiring, lifespan, ``serve``), its endpoints
(:mod:`.routes`), the token check (:mod:`.auth`), error answers (:mod:`.errors`) and
their OpenAPI declarations (:mod:`.openapi`), the raw-ASGI lookup
path (:mod:`.fastpath`), its JSON/Arrow wire format (:mod:`.wire`), hot reload of served views
(:mod:`.reload`; the child process that builds and checks a new view: :mod:`.build_worker`),
Prometheus metrics (:mod:`.metrics`) and the HTTP client (:mod:`.client`). Import the
submodule you need: the client does not import FastAPI."""
