"""S3 and S3-compatible stores (MinIO, Ceph, AWS) through boto3.

Endpoint, region and credentials come from boto3's own environment variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, ...). Transient faults are retried by botocore's standard mode with backoff
and jitter; what remains is sorted into the input's fault (missing, denied) or the service's.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ParamValidationError
from botocore.exceptions import ClientError as BotoClientError

from config.settings import get_settings
from worker.errors import ServerError, StorageDenied, StorageLocationError, StorageNotFound
from worker.storage.base import Storage

MIN_PART = 5 * 1024 * 1024  # S3's smallest multipart part (but the last)
_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchUpload"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}


def split_url(url: str) -> tuple[str, str]:
    bucket, _, key = url[len("s3://") :].partition("/")
    return bucket, key


class S3Storage(Storage):
    _instance: tuple[int, S3Storage] | None = None

    def __init__(self) -> None:
        settings = get_settings()
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            region_name=settings.s3_region,
            config=Config(
                retries={"mode": "standard", "max_attempts": settings.s3_max_attempts},
                connect_timeout=settings.s3_connect_timeout,
                read_timeout=settings.s3_read_timeout,
            ),
        )
        self.attempts = settings.s3_max_attempts

    @classmethod
    def shared(cls) -> S3Storage:
        """One client per process (boto3 clients do not survive a fork)."""
        if cls._instance is None or cls._instance[0] != os.getpid():
            cls._instance = (os.getpid(), cls())
        return cls._instance[1]

    def _call(self, url: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except BotoClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            if code in _NOT_FOUND:
                what = "bucket" if code == "NoSuchBucket" else "object"
                raise StorageNotFound(f"{url}: no such {what}") from None
            if code in _DENIED:
                raise StorageDenied(f"{url}: access denied ({code})") from None
            raise ServerError(f"{url}: storage error {code or exc}") from None
        except ParamValidationError as exc:
            reason = str(exc).splitlines()[-1].split('"')[0].strip(" :")  # not the value again
            raise StorageLocationError(f"{url}: not a valid S3 location ({reason})") from None
        except BotoCoreError as exc:
            raise ServerError(f"{url}: storage unreachable ({type(exc).__name__})") from None

    def _get(self, url: str, **kwargs: Any) -> bytes:
        """An object's bytes. botocore retries until the response headers arrive; a body cut off
        or stalled after them is fetched again here, with the same backoff and jitter."""
        bucket, key = split_url(url)
        attempt = 0
        while True:
            attempt += 1
            response = self._call(url, self.client.get_object, Bucket=bucket, Key=key, **kwargs)
            try:
                return response["Body"].read()
            except (BotoCoreError, OSError) as exc:
                if attempt >= self.attempts:
                    raise ServerError(f"{url}: read cut short ({type(exc).__name__})") from None
                time.sleep(random.uniform(0, min(20.0, 0.5 * 2**attempt)))

    def read(self, url: str) -> bytes:
        return self._get(url)

    def read_range(self, url: str, start: int, length: int) -> bytes:
        return self._get(url, Range=f"bytes={start}-{start + length - 1}")

    def size(self, url: str) -> int:
        bucket, key = split_url(url)
        return int(self._call(url, self.client.head_object, Bucket=bucket, Key=key)["ContentLength"])

    def write(self, url: str, data: bytes) -> None:
        bucket, key = split_url(url)
        self._call(url, self.client.put_object, Bucket=bucket, Key=key, Body=data)

    def download(self, url: str, path: Path) -> None:
        bucket, key = split_url(url)
        self._call(url, self.client.download_file, Bucket=bucket, Key=key, Filename=str(path))

    def delete_prefix(self, url: str) -> int:
        bucket, prefix = split_url(url.rstrip("/") + "/")
        count = 0
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        try:
            for page in pages:
                keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
                if keys:
                    self._call(url, self.client.delete_objects, Bucket=bucket,
                               Delete={"Objects": keys, "Quiet": True})
                    count += len(keys)
        except BotoClientError as exc:
            raise ServerError(f"{url}: cannot list ({exc.response.get('Error', {}).get('Code')})") from None
        return count

    def compose(self, url: str, sources: list[tuple[str, int]], tail: bytes) -> int:
        """Multipart upload: large sources are copied inside S3 (UploadPartCopy, by byte range);
        small ones are read and sent on, joined until a part reaches S3's 5 MiB minimum."""
        bucket, key = split_url(url)
        upload = self._call(url, self.client.create_multipart_upload, Bucket=bucket, Key=key)
        upload_id = upload["UploadId"]
        parts: list[dict] = []
        buffer = bytearray()
        total = 0

        def send(body: bytes) -> None:
            number = len(parts) + 1
            result = self._call(url, self.client.upload_part, Bucket=bucket, Key=key,
                                UploadId=upload_id, PartNumber=number, Body=body)
            parts.append({"PartNumber": number, "ETag": result["ETag"]})

        try:
            for source, size in sources:
                position = 0
                if buffer:
                    position = min(MIN_PART - len(buffer), size)
                    buffer += self.read_range(source, 0, position)
                    if len(buffer) >= MIN_PART:
                        send(bytes(buffer))
                        buffer.clear()
                rest = size - position
                if rest >= MIN_PART:
                    source_bucket, source_key = split_url(source)
                    number = len(parts) + 1
                    result = self._call(
                        source, self.client.upload_part_copy, Bucket=bucket, Key=key,
                        UploadId=upload_id, PartNumber=number,
                        CopySource={"Bucket": source_bucket, "Key": source_key},
                        CopySourceRange=f"bytes={position}-{size - 1}",
                    )
                    parts.append({"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]})
                elif rest > 0:
                    buffer += self.read_range(source, position, rest)
                    if len(buffer) >= MIN_PART:
                        send(bytes(buffer))
                        buffer.clear()
                total += size
            buffer += tail
            send(bytes(buffer))
            try:
                self._call(url, self.client.complete_multipart_upload, Bucket=bucket, Key=key,
                           UploadId=upload_id, MultipartUpload={"Parts": parts})
            except StorageNotFound:
                # A completion retried after its first attempt went through (the answer was lost).
                if self.size(url) != total + len(tail):
                    raise
            # An upload begun by a retried request whose first attempt went through is left open.
            self.abort_uploads(url)
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except (BotoClientError, BotoCoreError):
                pass
            raise
        return total + len(tail)

    def abort_uploads(self, url: str) -> int:
        bucket, key = split_url(url)
        listing = self._call(url, self.client.list_multipart_uploads, Bucket=bucket, Prefix=key)
        count = 0
        for upload in listing.get("Uploads", []):
            if upload["Key"] == key:
                self._call(url, self.client.abort_multipart_upload, Bucket=bucket, Key=key,
                           UploadId=upload["UploadId"])
                count += 1
        return count
