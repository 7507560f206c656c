"""Which notify_url a worker may call: the host list is matched on the URL's real host."""

import pytest

from worker.webhook import WebhookRefused, allowed_hosts, check_url

HOSTS = allowed_hosts(" cvat.example , 10.0.0.5:8080,")


@pytest.mark.parametrize("url", [
    "https://cvat.example/api/hooks", "http://CVAT.example:9000/x", "http://10.0.0.5:8080/h?a=1",
])
def test_listed_hosts_are_called(url):
    check_url(url, HOSTS)


@pytest.mark.parametrize("url, why", [
    ("http://10.0.0.5/h", "'10.0.0.5' is not in"),  # listed with a port only
    ("http://10.0.0.5:8081/h", "'10.0.0.5:8081' is not in"),
    ("http://cvat.example@169.254.169.254/latest", "'169.254.169.254' is not in"),
    ("http://cvat.example.evil.net/", "'cvat.example.evil.net' is not in"),
    ("ftp://cvat.example/x", "not an http(s) URL"),
    ("file:///etc/passwd", "not an http(s) URL"),
])
def test_other_hosts_and_schemes_are_refused(url, why):
    with pytest.raises(WebhookRefused, match=why.replace("(", r"\(").replace(")", r"\)")):
        check_url(url, HOSTS)


def test_no_list_no_webhook():
    with pytest.raises(WebhookRefused):
        check_url("http://cvat.example/", allowed_hosts(""))
