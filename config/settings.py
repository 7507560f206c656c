"""Settings from environment variables, validated once when a process starts.

Broker, backend and S3 use the names their own tools read (CELERY_*, AWS_*); the rest of the
service's knobs are CITYSCAPES_*.
"""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CITYSCAPES_", extra="ignore", populate_by_name=True)

    broker_url: str = Field("redis://127.0.0.1:6379/0", alias="CELERY_BROKER_URL")
    result_backend: str = Field("redis://127.0.0.1:6379/1", alias="CELERY_RESULT_BACKEND")
    # Where job progress lives (a Redis URL); the result backend's Redis by default.
    progress_url: str | None = None
    s3_endpoint_url: str | None = Field(None, alias="AWS_ENDPOINT_URL")
    s3_region: str = Field("us-east-1", alias="AWS_DEFAULT_REGION")
    # Key prefix, in the output's bucket, under which chunks are staged per job.
    staging_prefix: str = ".cityscapes-staging/"
    # Where exports keep each image's encoded entries (worker.run_cache), e.g. s3://bucket/cache/;
    # unset: no cache. A job turns it off for itself with "cache": false.
    cache_prefix: str | None = None
    # Chunks are sized by work, so that a chunk's time and memory are about the same whatever
    # its images: export chunks by pixels (24 images of 2048x1024, which stage ~6.5 MB, above S3's
    # 5 MiB part minimum, so the assembly copies them inside S3), import chunks by bytes of input
    # files; and at most chunk_size images each.
    chunk_pixels: int = Field(24 * 2048 * 1024, ge=1)
    chunk_bytes: int = Field(8 << 20, ge=1)
    chunk_size: int = Field(1000, ge=1, le=10000)
    queue: str = "cityscapes"
    soft_time_limit: int = Field(600, ge=1)  # seconds a task may run before it is told to stop
    time_limit: int = Field(660, ge=1)  # ... and before it is killed
    # A message not acknowledged this long (its worker died) is delivered again.
    visibility_timeout: int = Field(900, ge=2)
    # How often a worker looks for such messages: recovery from a dead worker takes at most
    # visibility_timeout + restore_interval seconds.
    restore_interval: int = Field(10, ge=1)
    # Redis broker: a running task holds a lease renewed every lease_seconds/5; a worker that
    # finds a lease lapsed (its task's worker died) puts the task back in the queue at once.
    lease_seconds: int = Field(15, ge=2)
    # RabbitMQ's consumer_timeout (its server setting; 30 min by default): a task unacknowledged
    # this long closes its worker's channel, so every task must end well within it.
    broker_consumer_timeout: int = Field(1800, ge=1)
    # A job with no sign of life (a chunk starting or ending) for this long is failed and its
    # files removed; it must exceed the longest a chunk can wait for redelivery. (Time spent in
    # a backlog does not count: the check waits in the same queue.)
    stuck_after: int = Field(3600, ge=2)
    # A chunk whose worker dies while running it is run again, at most this many times in all.
    max_deliveries: int = Field(3, ge=1)
    reap_interval: int = Field(60, ge=1)  # how often one of the workers looks for stuck jobs
    result_expires: int = Field(7 * 24 * 3600, ge=60)
    progress_ttl: int = Field(7 * 24 * 3600, ge=60)
    # Job-end webhooks (notify_url): the hosts (or host:port) workers may call, comma-separated
    # (none by default: no webhook is sent), and the HMAC-SHA256 key that signs each body.
    webhook_hosts: str = ""
    webhook_secret: str | None = None
    webhook_timeout: float = Field(10, gt=0)
    # S3 calls: attempts (botocore's standard retry mode: backoff with jitter) and timeouts, s
    s3_max_attempts: int = Field(8, ge=1)
    s3_connect_timeout: float = Field(10, gt=0)
    s3_read_timeout: float = Field(60, gt=0)
    # Parts of one multipart upload: S3's 10,000, never more. Lowered only by tests, so that an
    # output of a few parts takes the two-level assembly a 10,000-part one takes on S3.
    s3_max_parts: int = Field(10_000, ge=3, le=10_000)

    @model_validator(mode="after")
    def _limits(self) -> Settings:
        if self.time_limit < self.soft_time_limit:
            raise ValueError("CITYSCAPES_TIME_LIMIT must be at least CITYSCAPES_SOFT_TIME_LIMIT")
        if self.broker_is_amqp:
            # RabbitMQ requeues a dead worker's tasks at once; what bounds a task is its server's
            # consumer_timeout.
            if self.time_limit >= self.broker_consumer_timeout:
                raise ValueError(
                    "CITYSCAPES_TIME_LIMIT must be below RabbitMQ's consumer_timeout"
                    " (CITYSCAPES_BROKER_CONSUMER_TIMEOUT), or a long chunk closes its worker's"
                    " channel"
                )
            if self.stuck_after <= self.time_limit:
                raise ValueError(
                    "CITYSCAPES_STUCK_AFTER must exceed CITYSCAPES_TIME_LIMIT, or running chunks"
                    " are reaped"
                )
        else:
            if self.visibility_timeout <= self.time_limit:
                raise ValueError(
                    "CITYSCAPES_VISIBILITY_TIMEOUT must exceed CITYSCAPES_TIME_LIMIT, or running"
                    " tasks are delivered twice"
                )
            if self.stuck_after <= self.visibility_timeout + self.restore_interval:
                raise ValueError(
                    "CITYSCAPES_STUCK_AFTER must exceed CITYSCAPES_VISIBILITY_TIMEOUT +"
                    " CITYSCAPES_RESTORE_INTERVAL, or chunks waiting for redelivery are reaped"
                )
        if self.staging_prefix.startswith("/") or not self.staging_prefix.endswith("/"):
            raise ValueError("CITYSCAPES_STAGING_PREFIX must be a relative key prefix ending in /")
        return self

    @property
    def broker_is_amqp(self) -> bool:
        return self.broker_url.split("://", 1)[0] in ("amqp", "amqps", "pyamqp")

    @property
    def progress_redis_url(self) -> str:
        return self.progress_url or self.result_backend


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
