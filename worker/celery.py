"""The Celery app: `celery -A worker worker` finds it here."""

from __future__ import annotations

import logging
import time

from celery import Celery, bootsteps
from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_init

from config.celery import celery_config
from config.settings import get_settings
from worker import progress
from worker.logs import use_json_logs

app = Celery("cityscapes_worker", include=["tasks.jobs", "tasks.export", "tasks.imports"])
app.conf.update(celery_config(get_settings()))
log = logging.getLogger("cityscapes.worker")


class Reaper(bootsteps.StartStopStep):
    """Every CITYSCAPES_REAP_INTERVAL seconds one worker of the cluster (whichever claims the
    turn first) queues the stuck-job check; no beat process is needed."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **_: object) -> None:
        self.timer_ref = None

    def start(self, worker) -> None:
        settings = get_settings()
        self.timer_ref = worker.timer.call_repeatedly(
            settings.reap_interval, self.tick, (settings.queue, settings.reap_interval), priority=10)

    def stop(self, worker) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()

    def tick(self, queue: str, interval: int) -> None:
        try:
            if progress.claim(f"reap:{queue}", interval):
                app.send_task("cityscapes.reap", kwargs={"sent_at": time.time()}, queue=queue)
        except Exception as exc:  # noqa: BLE001 - the broker may be away; try next turn
            log.warning("stuck-job check not queued: %s", exc)


app.steps["worker"].add(Reaper)


@celeryd_init.connect
def _validate_settings(**_: object) -> None:
    """A bad setting stops the worker at start-up, not at its first job."""
    get_settings.cache_clear()
    get_settings()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger, **_: object) -> None:
    use_json_logs(logger)
