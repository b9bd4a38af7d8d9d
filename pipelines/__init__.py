"""Scheduled feature pipelines, one module each, runnable with `featurestore run pipelines/<name>.py`."""
