"""Storage behind one small interface: s3:// URLs (boto3) and local paths (file:// or plain)."""

from __future__ import annotations

from worker.storage.base import Storage, join_url


def storage_for(url: str) -> Storage:
    """The storage that serves `url`."""
    if url.startswith("s3://"):
        from worker.storage.s3 import S3Storage

        return S3Storage.shared()
    from worker.storage.local import LocalStorage

    return LocalStorage()


__all__ = ["Storage", "join_url", "storage_for"]
