import json
import logging

from worker.logs import JsonFormatter, redact


def test_urls_lose_their_passwords(monkeypatch):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI")
    text = redact("broker redis://:hunter2@redis:6379/0 and s3 key wJalrXUtnFEMI, amqp://u:p@h//")
    assert "hunter2" not in text and "wJalrXUtnFEMI" not in text and ":p@" not in text
    assert "redis://:***@redis:6379/0" in text


def test_records_are_json_with_the_job_id():
    record = logging.LogRecord("cityscapes.export", logging.INFO, __file__, 1,
                               "wrote %s", ("s3://b/k.zip",), None)
    record.job_id = "abc"
    entry = json.loads(JsonFormatter().format(record))
    assert entry["job_id"] == "abc" and entry["message"] == "wrote s3://b/k.zip"
    assert entry["level"] == "INFO"
