"""The Cityscapes format core: pure functions over numpy arrays and bytes (no Celery, no storage)."""
