"""A stand-in for a web backend's own Celery app: two tasks a job's callbacks call by name, each
recording its call in a Redis list (BACKEND_RECORD_URL) so that a test can count them.

    celery -A tests.integration.backend.app worker -Q backend
"""

import json
import os

import redis
from celery import Celery

app = Celery("backend", broker=os.environ["CELERY_BROKER_URL"],
             backend=os.environ["CELERY_RESULT_BACKEND"])
app.conf.update(task_serializer="json", accept_content=["json"], result_serializer="json")
RECORD = redis.Redis.from_url(os.environ["BACKEND_RECORD_URL"], decode_responses=True)


@app.task(name="backend.done")
def done(result, *args):
    RECORD.rpush("calls", json.dumps({"task": "done", "result": result, "args": list(args)}))


@app.task(name="backend.failed")
def failed(*args):
    RECORD.rpush("calls", json.dumps({"task": "failed", "args": [str(a) for a in args]}))
