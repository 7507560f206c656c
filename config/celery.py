"""Celery settings for this workload, derived from the service settings."""

from __future__ import annotations

from config.settings import Settings


def broker_transport_options(settings: Settings) -> dict:
    """Redis emulates acknowledgements: a message not acknowledged within the visibility timeout
    is delivered again, and workers sweep for such messages. RabbitMQ requeues a dead consumer's
    messages itself, the moment its connection drops; there we ask for publisher confirms, so a
    job is only reported sent once the broker has it."""
    if settings.broker_is_amqp:
        return {"confirm_publish": True}
    return {
        "visibility_timeout": settings.visibility_timeout,
        "unacked_restore_interval": settings.restore_interval,
        # kombu's throttle is a count of sweeps to skip, not seconds: sweep every interval.
        "unacked_restore_throttle": 1,
        # A worker killed while restoring must not block restores for kombu's 5 minutes.
        "unacked_mutex_expire": 3 * settings.restore_interval,
    }


def celery_config(settings: Settings) -> dict:
    return {
        "broker_url": settings.broker_url,
        "result_backend": settings.result_backend,
        # Plain JSON only: a backend enqueues jobs without our code, and pickle runs code.
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        # Chunks are idempotent (each overwrites its own staged part), so a chunk whose worker
        # died is delivered again rather than lost.
        "task_acks_late": True,
        # A backend's link_error is called once, by the chord's callback, not also by each
        # failing chunk (Celery's default today; pinned so that a change of default shows).
        "task_allow_error_cb_on_chord_header": False,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": broker_transport_options(settings),
        "result_backend_transport_options": {"visibility_timeout": settings.visibility_timeout},
        "task_soft_time_limit": settings.soft_time_limit,
        "task_time_limit": settings.time_limit,
        "result_expires": settings.result_expires,
        "result_extended": True,
        "task_default_queue": settings.queue,
        "task_track_started": True,
        # Events for Flower.
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
