"""S3 storage against moto's server over HTTP: composition by multipart copy (in two levels past
the part limit, in ranges past the part size), errors named."""

import os

import pytest
from botocore.exceptions import ClientError

from worker.errors import ServerError, SourceChanged, StorageNotFound
from worker.storage import s3
from worker.storage.s3 import MIN_PART, S3Storage


@pytest.fixture
def bucket(make_cluster):
    return make_cluster(names=()).bucket


@pytest.fixture
def store(bucket):
    return S3Storage()


def test_compose_copies_large_sources_and_joins_small_ones(store, bucket):
    pieces = {
        "a": os.urandom(MIN_PART + 1000),  # copied inside S3
        "b": os.urandom(1000),  # too small for a part: joined with what follows
        "c": os.urandom(MIN_PART + 5),  # its head tops up b's part, the rest is copied
        "d": os.urandom(300),
    }
    for name, data in pieces.items():
        store.write(f"s3://{bucket}/compose/{name}", data)
    sources = [(f"s3://{bucket}/compose/{n}", len(d), None) for n, d in pieces.items()]
    size = store.compose(f"s3://{bucket}/compose/out", sources, b"tail")
    expected = b"".join(pieces.values()) + b"tail"
    assert size == len(expected)
    assert store.read(f"s3://{bucket}/compose/out") == expected
    assert store.read_range(f"s3://{bucket}/compose/out", 5, 10) == expected[5:15]
    assert store.size(f"s3://{bucket}/compose/out") == len(expected)
    assert store.delete_prefix(f"s3://{bucket}/compose") == 5


def test_missing_objects_and_buckets_are_named(store, bucket):
    with pytest.raises(StorageNotFound, match=f"s3://{bucket}/no/such: no such object"):
        store.read(f"s3://{bucket}/no/such")
    with pytest.raises(StorageNotFound, match="no such bucket"):
        store.read("s3://no-such-bucket/x")


def test_a_source_pinned_by_its_fingerprint_is_joined_only_while_unchanged(store, bucket):
    """compose copies a source given with a fingerprint on condition of its ETag (S3 answers
    412 when it changed; moto's server does not check, so the condition is looked at in the
    calls) and reads it on the same condition when it is joined in passing."""
    large, small = f"s3://{bucket}/runs/large", f"s3://{bucket}/runs/small"
    store.write(large, os.urandom(MIN_PART + 10))
    store.write(small, b"small")
    pinned = [(large, MIN_PART + 10, store.fingerprint(large)),
              (small, 5, store.fingerprint(small))]
    store.client = RecordingClient(store.client)
    store.compose(f"s3://{bucket}/out", pinned, b"tail")
    assert store.read(f"s3://{bucket}/out") == store.read(large) + b"small" + b"tail"
    (copy,) = [kwargs for name, kwargs in store.client.calls if name == "upload_part_copy"]
    assert copy["CopySourceIfMatch"] == pinned[0][2].partition(":")[2]
    store.write(small, b"other")  # another ETag: S3 would refuse the read
    with pytest.raises(SourceChanged, match="runs/small: changed since the job looked at it"):
        store.compose(f"s3://{bucket}/out2", pinned, b"tail")

    def replaced_meanwhile(**kwargs):
        raise ClientError({"Error": {"Code": "PreconditionFailed"}}, "UploadPartCopy")

    store.client.upload_part_copy = replaced_meanwhile  # as S3 answers when the ETag changed
    with pytest.raises(SourceChanged):
        store.compose(f"s3://{bucket}/out3", pinned[:1], b"")


class RecordingClient:
    """The storage's boto3 client, recording each call (name, kwargs); `fail(name, key)` makes
    the first such call on `key` answer 500 InternalError."""

    def __init__(self, client):
        self.client, self.calls, self.faults = client, [], set()

    def fail(self, name: str, key: str) -> None:
        self.faults.add((name, key))

    def __getattr__(self, name):
        method = getattr(self.client, name)

        def call(**kwargs):
            self.calls.append((name, kwargs))
            if (name, kwargs.get("Key")) in self.faults:
                self.faults.discard((name, kwargs.get("Key")))
                raise ClientError({"Error": {"Code": "InternalError"}}, name)
            return method(**kwargs)

        return call if callable(method) and not name.startswith("get_") else method

    def uploads(self) -> dict[str, list[int]]:
        """Each multipart upload (by key, in order made) and the numbers of its parts."""
        parts: dict[str, list[int]] = {}
        for name, kwargs in self.calls:
            if name in ("upload_part", "upload_part_copy"):
                parts.setdefault(kwargs["UploadId"], []).append(kwargs["PartNumber"])
        return parts

    def copied_lengths(self) -> list[int]:
        lengths = []
        for name, kwargs in self.calls:
            if name == "upload_part_copy":
                first, last = kwargs["CopySourceRange"][len("bytes="):].split("-")
                lengths.append(int(last) - int(first) + 1)
        return lengths


def put_sources(store, bucket, sizes: list[int]) -> tuple[list[tuple[str, int]], bytes]:
    """Objects of random bytes of these sizes under compose/; (sources, their concatenation)."""
    sources, joined = [], []
    for n, size in enumerate(sizes):
        data = os.urandom(size)
        store.write(f"s3://{bucket}/compose/{n:02d}", data)
        sources.append((f"s3://{bucket}/compose/{n:02d}", size, None))
        joined.append(data)
    return sources, b"".join(joined)


def left_behind(store, bucket) -> tuple[list[str], list[str]]:
    """(keys, keys of open uploads) in the bucket beside the sources."""
    listing = store.client.list_objects_v2(Bucket=bucket)
    keys = [o["Key"] for o in listing.get("Contents", []) if not o["Key"].startswith("compose/")]
    uploads = store.client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return keys, [u["Key"] for u in uploads]


# Large sources are copied whole, small ones are joined (one with the head of the next large one)
TWO_LEVELS = [MIN_PART + 1000, 1000, MIN_PART + 5, 300, MIN_PART, MIN_PART + 7, 2000,
              MIN_PART + 9, MIN_PART + 11, MIN_PART + 13, MIN_PART + 17, 40]


def test_compose_past_the_part_limit_joins_intermediates_then_removes_them(store, bucket,
                                                                           monkeypatch):
    monkeypatch.setattr(s3, "MAX_PARTS", 4)
    sources, joined = put_sources(store, bucket, TWO_LEVELS)
    parts, rest = s3.plan_parts(sources)
    assert s3.count_parts(parts, rest, b"tail") > 8  # more than one level of 4-part intermediates
    store.client = recorder = RecordingClient(store.client)
    size = store.compose(f"s3://{bucket}/out", sources, b"tail")

    assert store.read(f"s3://{bucket}/out") == joined + b"tail" and size == len(joined) + 4
    uploads = recorder.uploads()
    assert len(uploads) == 4  # three intermediates, then the output
    assert all(sorted(numbers) == list(range(1, len(numbers) + 1)) and len(numbers) <= 4
               for numbers in uploads.values()), uploads
    made = [kwargs["Key"] for name, kwargs in recorder.calls if name == "create_multipart_upload"]
    assert made[-1] == "out" and all(k.startswith(".cityscapes-staging/compose/out/")
                                     for k in made[:-1]), made
    assert left_behind(store, bucket) == (["out"], [])


def test_compose_within_the_part_limit_makes_one_upload(store, bucket, monkeypatch):
    monkeypatch.setattr(s3, "MAX_PARTS", 4)
    sources, joined = put_sources(store, bucket, [MIN_PART + 1, 10, MIN_PART + 2])
    store.client = recorder = RecordingClient(store.client)
    store.compose(f"s3://{bucket}/out", sources, b"tail")
    assert store.read(f"s3://{bucket}/out") == joined + b"tail"
    assert list(recorder.uploads().values()) == [[1, 2, 3]]  # copy, copy, 10 bytes + head + tail
    assert left_behind(store, bucket) == (["out"], [])


def test_a_source_over_the_largest_part_is_copied_in_ranges(store, bucket, monkeypatch):
    largest = MIN_PART + 1024 * 1024
    monkeypatch.setattr(s3, "MAX_PART", largest)
    # 3 parts' worth and 100 bytes: the 100 bytes are joined with the head of the next source
    sources, joined = put_sources(store, bucket, [3 * largest + 100, MIN_PART + 50, 7])
    store.client = recorder = RecordingClient(store.client)
    store.compose(f"s3://{bucket}/out", sources, b"tail")

    assert store.read(f"s3://{bucket}/out") == joined + b"tail"
    assert recorder.copied_lengths() == [largest] * 3
    bodies = [len(kw["Body"]) for name, kw in recorder.calls if name == "upload_part"]
    assert bodies == [MIN_PART, 150 + 7 + 4]  # 100 + the next one's head; its rest, 7, tail
    assert left_behind(store, bucket) == (["out"], [])


@pytest.mark.parametrize("call", ["upload_part_copy", "complete_multipart_upload"])
def test_a_failed_second_level_leaves_no_intermediates_and_no_upload(store, bucket,
                                                                     monkeypatch, call):
    monkeypatch.setattr(s3, "MAX_PARTS", 4)
    sources, _ = put_sources(store, bucket, TWO_LEVELS)
    store.client = recorder = RecordingClient(store.client)
    recorder.fail(call, "out")
    with pytest.raises(ServerError, match=f"s3://{bucket}/.*InternalError"):
        store.compose(f"s3://{bucket}/out", sources, b"tail", f"s3://{bucket}/staging/compose")
    made = [kwargs["Key"] for name, kwargs in recorder.calls if name == "complete_multipart_upload"]
    assert made[:3] == [f"staging/compose/{n:05d}" for n in range(3)]  # the first level was done
    assert left_behind(store, bucket) == ([], [])


def test_deleting_a_prefix_aborts_the_uploads_left_open_under_it(store, bucket):
    """As a composition cut short by a killed worker leaves them, for the job's cleanup."""
    for key in ("staging/compose/00000", "staging/x", "stagingelse"):
        store.client.create_multipart_upload(Bucket=bucket, Key=key)
    store.write(f"s3://{bucket}/staging/y", b"y")
    assert store.delete_prefix(f"s3://{bucket}/staging") == 1
    assert left_behind(store, bucket) == ([], ["stagingelse"])


def test_an_output_over_the_largest_object_is_refused_before_any_upload(store, bucket,
                                                                        monkeypatch):
    from worker.errors import OutputTooLarge

    monkeypatch.setattr(s3, "MAX_OBJECT", MIN_PART)
    sources, _ = put_sources(store, bucket, [MIN_PART])
    with pytest.raises(OutputTooLarge, match="more than S3's largest object"):
        store.compose(f"s3://{bucket}/out", sources, b"tail")
    assert left_behind(store, bucket) == ([], [])
