"""The Celery app: `celery -A worker worker` finds it here."""

from __future__ import annotations

from celery import Celery
from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_init

from config.celery import celery_config
from config.settings import get_settings
from worker.logs import use_json_logs

app = Celery("cityscapes_worker", include=["tasks.jobs", "tasks.export", "tasks.imports"])
app.conf.update(celery_config(get_settings()))


@celeryd_init.connect
def _validate_settings(**_: object) -> None:
    """A bad setting stops the worker at start-up, not at its first job."""
    get_settings.cache_clear()
    get_settings()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger, **_: object) -> None:
    use_json_logs(logger)
