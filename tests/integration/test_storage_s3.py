"""S3 storage against moto's server over HTTP: composition by multipart copy, errors named."""

import os

import pytest

from worker.errors import StorageNotFound
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
    sources = [(f"s3://{bucket}/compose/{n}", len(d)) for n, d in pieces.items()]
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
