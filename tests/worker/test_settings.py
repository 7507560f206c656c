"""Settings per broker: what applies on Redis does not on RabbitMQ, and the reverse."""

import pytest
from pydantic import ValidationError

from config.celery import celery_config
from config.settings import Settings


def settings(broker: str, **values) -> Settings:
    return Settings(CELERY_BROKER_URL=broker, **values)


def test_redis_gets_the_visibility_sweep_and_rabbitmq_publisher_confirms():
    on_redis = celery_config(settings("redis://127.0.0.1:6379/0", visibility_timeout=700))
    on_rabbitmq = celery_config(settings("amqp://guest:guest@127.0.0.1:5672//"))
    assert on_redis["broker_transport_options"]["visibility_timeout"] == 700
    assert on_redis["broker_transport_options"]["unacked_restore_throttle"] == 1
    assert on_rabbitmq["broker_transport_options"] == {"confirm_publish": True}
    # Acknowledged late either way: a chunk whose worker dies is delivered again.
    assert on_redis["task_acks_late"] and on_rabbitmq["task_acks_late"]


@pytest.mark.parametrize("scheme", ["amqp", "amqps", "pyamqp"])
def test_a_time_limit_past_rabbitmqs_consumer_timeout_is_refused(scheme):
    with pytest.raises(ValidationError, match="below RabbitMQ's consumer_timeout"):
        settings(f"{scheme}://h//", soft_time_limit=1700, time_limit=1800)
    assert settings(f"{scheme}://h//", soft_time_limit=1700, time_limit=1799,
                    broker_consumer_timeout=1800).time_limit == 1799
    # Raised on the broker's side (a server setting), and told to us:
    assert settings(f"{scheme}://h//", soft_time_limit=1700, time_limit=1800,
                    broker_consumer_timeout=3600).broker_is_amqp


def test_the_visibility_timeout_binds_on_redis_only():
    long_chunks = {"soft_time_limit": 1000, "time_limit": 1100}  # past the 900 s default
    with pytest.raises(ValidationError, match="VISIBILITY_TIMEOUT must exceed"):
        settings("redis://h/0", **long_chunks)
    assert settings("amqp://h//", **long_chunks).visibility_timeout == 900
    with pytest.raises(ValidationError, match="STUCK_AFTER must exceed CITYSCAPES_TIME_LIMIT"):
        settings("amqp://h//", **long_chunks, stuck_after=1000)
