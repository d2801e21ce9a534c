"""Blobs and StorageLocation against a real S3 API server on loopback (moto), started by the test session."""

import threading

import pytest

from resources.objectstore.location import StorageLocation, StorageUriError

pytestmark = pytest.mark.integration


def test_put_if_absent_creates_once_and_never_overwrites(s3_location):
    blobs = s3_location.blobs()
    assert blobs.put_bytes_if_absent("a/x.bin", b"first") is True
    assert blobs.put_bytes_if_absent("a/x.bin", b"second") is False
    assert blobs.get_bytes("a/x.bin") == b"first"
    assert [(b.name, b.size) for b in blobs.list("a/")] == [("a/x.bin", 5)]


def test_concurrent_creates_have_exactly_one_winner(s3_location):
    blobs = s3_location.blobs()
    won = []

    def create(i):
        if blobs.put_bytes_if_absent("race.bin", str(i).encode() * 1000):
            won.append(i)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 1
    assert blobs.get_bytes("race.bin") == str(won[0]).encode() * 1000


def test_file_put_streams_and_download_round_trips(s3_location, tmp_path):
    src = tmp_path / "big.bin"
    src.write_bytes(bytes(range(256)) * 20_000)  # 5 MB
    blobs = s3_location.blobs()
    assert blobs.put_file_if_absent("big.bin", src) is True
    out = tmp_path / "out.bin"
    with open(out, "wb") as f:
        assert blobs.download("big.bin", f) == src.stat().st_size
    assert out.read_bytes() == src.read_bytes()
    with pytest.raises(FileNotFoundError), open(tmp_path / "none", "wb") as f:
        blobs.download("missing.bin", f)
    blobs.delete("big.bin")
    blobs.delete("big.bin")  # idempotent
    assert blobs.size("big.bin") is None


def test_storage_uri_is_checked_and_reads_the_aws_variables():
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_DEFAULT_REGION": "eu-west-1", "AWS_ALLOW_HTTP": "true"}
    loc = StorageLocation.parse("s3://team-bucket/org/sessions/", env)
    assert (loc.bucket, loc.prefix, loc.uri) == ("team-bucket", "org/sessions", "s3://team-bucket/org/sessions")
    assert loc.lance_options() == {"endpoint": "http://127.0.0.1:9", "region": "eu-west-1", "allow_http": "true"}
    assert loc.child("lance").uri == "s3://team-bucket/org/sessions/lance"
    for bad in ("/tmp/x", "gs://b/p", "s3://", "s3://b/p?endpoint=x"):
        with pytest.raises(StorageUriError):
            StorageLocation.parse(bad, env)
