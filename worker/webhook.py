"""The job-end notification a backend may ask for (`notify_url`): one signed JSON POST.

Only hosts an operator listed (CITYSCAPES_WEBHOOK_HOSTS) are ever contacted, and redirects are
not followed, so a job spec cannot point a worker at an address inside the cluster's network.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
from typing import Any
from urllib.parse import urlsplit

SIGNATURE_HEADER = "X-Cityscapes-Signature"


class WebhookRefused(Exception):
    """The URL is not one a worker may call."""


def allowed_hosts(setting: str) -> set[str]:
    """'a.example, 10.0.0.5:8080' -> {'a.example', '10.0.0.5:8080'} (case folded)."""
    return {host.strip().lower() for host in setting.split(",") if host.strip()}


def check_url(url: str, hosts: set[str]) -> None:
    """Refuse a URL whose scheme is not http(s) or whose host (or host:port) is not listed."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused(f"notify_url {url!r}: not an http(s) URL")
    host = parts.hostname.lower()
    netloc = f"{host}:{parts.port}" if parts.port else host
    if host not in hosts and netloc not in hosts:
        raise WebhookRefused(
            f"notify_url host {netloc!r} is not in CITYSCAPES_WEBHOOK_HOSTS; not called")


def signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(status: dict[str, Any], job_id: str) -> bytes:
    """The POST body: the job's status as the client reports it, with its id."""
    return json.dumps({"job_id": job_id, **status}, sort_keys=True).encode()


def post(url: str, body: bytes, secret: str | None, timeout: float) -> int:
    """POST `body`; returns the HTTP status (redirects are answers, not followed)."""
    parts = urlsplit(url)
    connection_type = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_type(parts.hostname, parts.port, timeout=timeout)
    headers = {"Content-Type": "application/json", "User-Agent": "cityscapes-worker"}
    if secret:
        headers[SIGNATURE_HEADER] = signature(body, secret)
    path = parts.path or "/"
    try:
        connection.request("POST", f"{path}?{parts.query}" if parts.query else path, body, headers)
        return connection.getresponse().status
    finally:
        connection.close()
