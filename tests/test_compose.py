"""docker-compose.yml holds the cluster SPEC.md promises (no Docker engine runs in CI)."""

from pathlib import Path

import yaml

COMPOSE = Path(__file__).parents[1] / "docker-compose.yml"


def test_compose_file_describes_the_cluster():
    spec = yaml.safe_load(COMPOSE.read_text())
    services = spec["services"]
    assert set(services) >= {"rabbitmq", "redis", "minio", "minio-init", "worker", "flower"}
    assert "mc mb" in " ".join(services["minio-init"]["command"])
    worker = services["worker"]
    assert worker["command"][:4] == ["celery", "-A", "worker", "worker"]
    assert "container_name" not in worker and "ports" not in worker  # so --scale worker=N works
    # RabbitMQ the broker by default (a variable switches to Redis), Redis the results.
    assert "amqp://cityscapes:" in worker["environment"]["CELERY_BROKER_URL"]
    assert "@rabbitmq:5672//" in worker["environment"]["CELERY_BROKER_URL"]
    assert worker["environment"]["CELERY_RESULT_BACKEND"].startswith("redis://redis")
    assert "rabbitmq" in worker["depends_on"] and "rabbitmq" in services["flower"]["depends_on"]
    assert worker["environment"]["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert any(arg.startswith("--basic-auth=") for arg in services["flower"]["command"])
    networks = {tuple(s.get("networks", [])) for s in services.values()}
    assert networks == {("cityscapes",)}

