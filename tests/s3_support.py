"""A real S3 API server on loopback for tests: moto's server mode (ThreadedMotoServer), one per test session.

`s3_server` starts it on a free port; `s3_location` makes a fresh bucket per test and exports the
standard AWS variables (endpoint, credentials, region, plain HTTP allowed), so code under test and
the subprocesses it starts reach it exactly as they would reach a real bucket. moto enforces
``If-None-Match: *`` on PutObject (412 when the key exists), which put-if-absent pack writes and
Lance's conditional-put commits rely on.
"""

from __future__ import annotations

import itertools
import logging
import socket
from collections.abc import Iterator

import pytest

from resources.objectstore.location import StorageLocation

CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sessionlake-test", "AWS_SECRET_ACCESS_KEY": "sessionlake-test-secret",
               "AWS_REGION": "us-east-1", "AWS_ALLOW_HTTP": "true"}
_buckets = itertools.count()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    """moto's S3 API on ``http://127.0.0.1:<port>``; ``env`` is what a client needs to reach it."""

    def __init__(self, port: int | None = None) -> None:
        """``port``: that of a server stopped before, to bring its endpoint back (the buckets live in
        this process, not in the server: they are still there)."""
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one log line per request otherwise

        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)

    def start(self) -> S3Server:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    @property
    def env(self) -> dict[str, str]:
        return {**CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def new_bucket(self, name: str | None = None) -> str:
        name = name or f"bucket-{next(_buckets)}"
        self.location(name).blobs().client.create_bucket(Bucket=name)
        return name

    def location(self, bucket: str, prefix: str = "") -> StorageLocation:
        return StorageLocation.parse(f"s3://{bucket}/{prefix}", self.env)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = S3Server().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def s3_location(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> StorageLocation:
    """A fresh bucket (prefix ``team``) with the AWS variables exported for this test."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    return s3_server.location(s3_server.new_bucket(), "team")
