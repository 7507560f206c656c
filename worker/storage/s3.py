"""S3 and S3-compatible stores (MinIO, Ceph, AWS) through boto3.

Endpoint, region and credentials come from boto3's own environment variables (AWS_ENDPOINT_URL,
AWS_ACCESS_KEY_ID, ...). Transient faults are retried by botocore's standard mode with backoff
and jitter; what remains is sorted into the input's fault (missing, denied) or the service's.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ParamValidationError
from botocore.exceptions import ClientError as BotoClientError

from config.settings import get_settings
from worker.errors import (
    CityscapesWorkerError,
    OutputTooLarge,
    ServerError,
    StorageDenied,
    StorageLocationError,
    SourceChanged,
    StorageNotFound,
)
from worker.storage.base import Source, Storage, join_url

# S3's limits, module-level so that tests can lower them.
MIN_PART = 5 * 1024 * 1024  # smallest part of a multipart upload (but the last)
MAX_PART = 5 * 1024**3  # largest part, uploaded or copied (and largest CopyObject)
MAX_PARTS = 10_000  # parts of one multipart upload (CITYSCAPES_S3_MAX_PARTS may lower it)
PART_THREADS = 8  # parts uploaded or copied at a time by one assembly
PARTS_READ_AT_ONCE = 2  # of which joined from pieces read through the worker
MAX_OBJECT = 5 * 1024**4  # largest object
_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "404", "NotFound", "NoSuchUpload"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}


def split_url(url: str) -> tuple[str, str]:
    bucket, _, key = url[len("s3://") :].partition("/")
    return bucket, key


@dataclass(frozen=True)
class Piece:
    """A byte range of an object (which must still have ETag `etag`, if one is given)."""

    url: str
    start: int
    length: int
    etag: str | None = None


@dataclass(frozen=True)
class Part:
    """A part of a multipart upload: one piece copied inside S3, or pieces read and sent."""

    pieces: list[Piece]
    copy: bool = False

    @property
    def size(self) -> int:
        return sum(p.length for p in self.pieces)


def plan_parts(sources: list[Source]) -> tuple[list[Part], list[Piece]]:
    """The parts that join `sources` (url, size, fingerprint), and what is left over for the
    last part.

    Every part is MIN_PART..MAX_PART: a source's bytes past MIN_PART are copied in ranges of at
    most MAX_PART; the bytes before them (the head that tops up a part begun by the sources
    before, or a remainder under MIN_PART) are read and joined with their neighbours."""
    parts: list[Part] = []
    buffer: list[Piece] = []
    filled = 0

    def take(url: str, start: int, length: int) -> None:
        nonlocal filled
        buffer.append(Piece(url, start, length, etag))
        filled += length
        if filled >= MIN_PART:
            parts.append(Part(buffer.copy()))
            buffer.clear()
            filled = 0

    for url, size, fingerprint in sources:
        etag = fingerprint.partition(":")[2] if fingerprint else None
        position = 0
        if buffer:
            position = min(MIN_PART - filled, size)
            if position:
                take(url, 0, position)
        while size - position >= MIN_PART:
            length = min(size - position, MAX_PART)
            parts.append(Part([Piece(url, position, length, etag)], copy=True))
            position += length
        if position < size:
            take(url, position, size - position)
    return parts, buffer


def count_parts(parts: list[Part], rest: list[Piece], tail: bytes) -> int:
    return len(parts) + (1 if rest or tail or not parts else 0)


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
            if code in ("PreconditionFailed", "412"):
                raise SourceChanged(f"{url}: changed since the job looked at it") from None
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

    def fingerprint(self, url: str) -> str:
        bucket, key = split_url(url)
        head = self._call(url, self.client.head_object, Bucket=bucket, Key=key)
        return f"{head['ContentLength']}:{head['ETag']}"

    def write(self, url: str, data: bytes) -> None:
        bucket, key = split_url(url)
        self._call(url, self.client.put_object, Bucket=bucket, Key=key, Body=data)

    def download(self, url: str, path: Path) -> None:
        bucket, key = split_url(url)
        self._call(url, self.client.download_file, Bucket=bucket, Key=key, Filename=str(path))

    def upload(self, url: str, source: BinaryIO) -> None:
        bucket, key = split_url(url)
        self._call(url, self.client.upload_fileobj, Fileobj=source, Bucket=bucket, Key=key)

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
        # An intermediate of a composition cut short by a killed worker is left as an open upload.
        self._abort_uploads(url.rstrip("/") + "/", exact=False)
        return count

    def compose(self, url: str, sources: list[Source], tail: bytes,
                scratch: str | None = None) -> int:
        """One multipart upload: large sources are copied inside S3 (UploadPartCopy, by byte
        ranges of at most MAX_PART); small ones are read and sent on, joined until a part
        reaches S3's 5 MiB minimum. Past MAX_PARTS parts, runs of those parts are first composed
        into intermediate objects under `scratch` (by default beside the output, under the
        staging prefix), which are then copied into the output and deleted, also on failure."""
        total = sum(size for _, size, _ in sources) + len(tail)
        if total > MAX_OBJECT:
            raise OutputTooLarge(f"{url}: {total} bytes, more than S3's largest object"
                                 f" ({MAX_OBJECT} bytes); split the job")
        limit = min(MAX_PARTS, get_settings().s3_max_parts)
        parts, rest = plan_parts(sources)
        if count_parts(parts, rest, tail) <= limit:
            return self._upload(url, parts, rest, tail)
        if scratch is None:
            bucket, key = split_url(url)
            scratch = f"s3://{bucket}/{get_settings().staging_prefix}compose/{key}"
        parts += [Part(rest)] if rest else []
        runs = [parts[n : n + limit] for n in range(0, len(parts), limit)]
        intermediates = [(join_url(scratch, f"{n:05d}"), sum(p.size for p in run), None)
                         for n, run in enumerate(runs)]
        parts, rest = plan_parts(intermediates)
        # With S3's limits this cannot happen below MAX_OBJECT: 5 TiB is at most 1,048,576
        # parts of 5 MiB, so 105 intermediates, copied in at most 1,024 + 105 parts.
        if count_parts(parts, rest, tail) > limit:
            raise OutputTooLarge(f"{url}: more parts than two levels of {limit}-part uploads"
                                 " can join; split the job")
        try:
            for (intermediate, _, _), run in zip(intermediates, runs):
                self._upload(intermediate, run, [], b"")
            self._upload(url, parts, rest, tail)
        except BaseException:
            try:
                self.delete_prefix(scratch)
            except CityscapesWorkerError:
                pass  # the original fault says more; the job's cleanup tries again
            raise
        self.delete_prefix(scratch)
        return total

    def _upload(self, url: str, parts: list[Part], rest: list[Piece], tail: bytes) -> int:
        """One multipart upload of `parts`, then `rest` and `tail` as the last part."""
        bucket, key = split_url(url)
        upload = self._call(url, self.client.create_multipart_upload, Bucket=bucket, Key=key)
        upload_id = upload["UploadId"]
        total = sum(p.size for p in parts) + sum(p.length for p in rest) + len(tail)

        def send(number: int, body: bytes) -> dict:
            result = self._call(url, self.client.upload_part, Bucket=bucket, Key=key,
                                UploadId=upload_id, PartNumber=number, Body=body)
            return {"PartNumber": number, "ETag": result["ETag"]}

        def read(pieces: list[Piece]) -> bytes:
            return b"".join(self._get(p.url, Range=f"bytes={p.start}-{p.start + p.length - 1}",
                                      **({"IfMatch": p.etag} if p.etag else {}))
                            for p in pieces)

        reading = threading.BoundedSemaphore(PARTS_READ_AT_ONCE)

        def place(number: int, part: Part) -> dict:
            if not part.copy:
                with reading:  # a part joined in passing is held in memory, twice
                    return send(number, read(part.pieces))
            (piece,) = part.pieces
            source_bucket, source_key = split_url(piece.url)
            result = self._call(
                piece.url, self.client.upload_part_copy, Bucket=bucket, Key=key,
                UploadId=upload_id, PartNumber=number,
                CopySource={"Bucket": source_bucket, "Key": source_key},
                CopySourceRange=f"bytes={piece.start}-{piece.start + piece.length - 1}",
                **({"CopySourceIfMatch": piece.etag} if piece.etag else {}),
            )
            return {"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]}

        try:
            # Parts are placed several at a time: each is a request S3 serves on its own, and a
            # job of 40,000 parts would otherwise wait for each in turn.
            with ThreadPoolExecutor(PART_THREADS) as pool:
                done = list(pool.map(place, range(1, len(parts) + 1), parts))
            if rest or tail or not done:
                done.append(send(len(done) + 1, read(rest) + tail))
            try:
                self._call(url, self.client.complete_multipart_upload, Bucket=bucket, Key=key,
                           UploadId=upload_id, MultipartUpload={"Parts": done})
            except StorageNotFound:
                # A completion retried after its first attempt went through (the answer was lost).
                if self.size(url) != total:
                    raise
            # An upload begun by a retried request whose first attempt went through is left open.
            self.abort_uploads(url)
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except (BotoClientError, BotoCoreError):
                pass
            raise
        return total

    def abort_uploads(self, url: str) -> int:
        return self._abort_uploads(url, exact=True)

    def _abort_uploads(self, url: str, exact: bool) -> int:
        """Abort the unfinished uploads of `url`'s key, or (not `exact`) of every key under it."""
        bucket, key = split_url(url)
        listing = self._call(url, self.client.list_multipart_uploads, Bucket=bucket, Prefix=key)
        count = 0
        for upload in listing.get("Uploads", []):
            if upload["Key"] == key or not exact:
                self._call(url, self.client.abort_multipart_upload, Bucket=bucket,
                           Key=upload["Key"], UploadId=upload["UploadId"])
                count += 1
        return count
