"""The web console and the projector's pictures.

- :mod:`.insights`: what the pages show (summaries, histories, verdicts, commit comparisons, training
  sets), computed from metadata and online views, without a web framework;
- :mod:`.projection`: 2-D maps (PCA, or UMAP with the ``umap`` extra) of a sample of a view, cached per
  commit with checksums;
- :mod:`.plot`: the map as a PNG (matplotlib; ``featurestore plot``);
- :mod:`.web`: the pages (FastAPI + Jinja2), mounted at ``/ui`` of ``featurestore serve`` and run alone
  by ``featurestore ui``.

Import the submodule you need: this package imports none of them.
"""
