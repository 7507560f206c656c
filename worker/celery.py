"""The Celery app: `celery -A worker worker` finds it here."""

from __future__ import annotations

import logging
import time

from celery import Celery, bootsteps
from celery.signals import after_setup_logger, after_setup_task_logger, celeryd_init

from config.celery import celery_config
from config.settings import get_settings
from worker import leases, progress
from worker.logs import use_json_logs

app = Celery("cityscapes_worker", include=["tasks.lifecycle", "tasks.export", "tasks.imports"])
app.conf.update(celery_config(get_settings()))
log = logging.getLogger("cityscapes.worker")


class Repeating(bootsteps.StartStopStep):
    """A check every worker runs on its timer, in its main process."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker, **_: object) -> None:
        self.timer_ref = None

    def interval(self) -> float | None:
        raise NotImplementedError

    def tick(self) -> None:
        raise NotImplementedError

    def start(self, worker) -> None:
        interval = self.interval()
        if interval:
            self.timer_ref = worker.timer.call_repeatedly(interval, self.tick, priority=10)

    def stop(self, worker) -> None:
        if self.timer_ref is not None:
            self.timer_ref.cancel()


class Reaper(Repeating):
    """Every CITYSCAPES_REAP_INTERVAL seconds one worker of the cluster (whichever claims the
    turn first) queues the stuck-job check; no beat process is needed."""

    def interval(self) -> float:
        return get_settings().reap_interval

    def tick(self) -> None:
        settings = get_settings()
        try:
            if progress.claim(f"reap:{settings.queue}", settings.reap_interval):
                app.send_task("cityscapes.reap", kwargs={"sent_at": time.time()}, queue=settings.queue)
        except Exception as exc:  # noqa: BLE001 - the broker may be away; try next turn
            log.warning("stuck-job check not queued: %s", exc)


class LeaseWatch(Repeating):
    """On a Redis broker, every worker looks three times a lease period for running tasks whose
    lease lapsed (their worker died) and puts them back in the queue: a dead worker costs
    seconds, not the visibility timeout. (RabbitMQ does this itself.)"""

    def interval(self) -> float | None:
        settings = get_settings()
        return None if settings.broker_is_amqp else settings.lease_seconds / 3

    def tick(self) -> None:
        try:
            lapsed = leases.take_lapsed(progress.redis_client())
            if not lapsed:
                return
            with app.pool.acquire(block=True) as connection:
                for tag, started in lapsed:
                    if leases.redeliver(connection.default_channel, tag, started):
                        log.warning("a task's lease lapsed (its worker is gone): delivered again")
        except Exception as exc:  # noqa: BLE001 - Redis may be away; look again next turn
            log.warning("lapsed leases not checked: %s", exc)


app.steps["worker"].add(Reaper)
app.steps["worker"].add(LeaseWatch)

@celeryd_init.connect
def _validate_settings(**_: object) -> None:
    """A bad setting stops the worker at start-up, not at its first job."""
    get_settings.cache_clear()
    get_settings()


@after_setup_logger.connect
@after_setup_task_logger.connect
def _json_logs(logger, **_: object) -> None:
    use_json_logs(logger)
