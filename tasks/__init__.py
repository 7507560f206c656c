"""Celery tasks: thin glue between the broker, storage and the format core."""
