"""`Blobs`: the few object-store operations sessionlake needs, on one bucket prefix, through boto3.

Contract:
- ``put_file_if_absent`` / ``put_fileobj_if_absent`` / ``put_bytes_if_absent`` are atomic create-only
  writes: one ``PutObject`` with ``If-None-Match: *``. S3 makes an object visible whole or not at
  all, and refuses (412) a create over an existing key, so of two concurrent writers of one key
  exactly one wins and nothing is ever overwritten. They return True when this call created the
  object, False when it existed. A file body is streamed from disk (boto3 reads it in blocks), so
  memory does not grow with its size.
- ``download`` streams an object into an open binary file in `BLOCK` pieces; ``get_bytes`` is for
  small objects (manifests). A missing key raises FileNotFoundError in both.
- ``list`` yields `BlobInfo` (name below the prefix, size, last-modified time), in key order.
- ``copy`` is a server-side copy (multipart above boto3's threshold), overwriting the target.
- ``delete`` is idempotent. Names are relative to the prefix and never start with ``/``.
- ``check`` is one cheap request that says, as `StorageUnavailable`, why the bucket cannot be used.

boto3 is imported when the first client is built, not when this module is: the CLI's fast paths
never pay for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from resources.config.errors import StorageUnavailable

if TYPE_CHECKING:
    from resources.objectstore.location import StorageLocation

BLOCK = 1 << 20
_ACCESS_REFUSED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken")


@dataclass(frozen=True)
class BlobInfo:
    name: str
    size: int
    modified: datetime


class Blobs:
    """Objects under ``location`` (bucket + prefix); see the module docstring."""

    def __init__(self, location: StorageLocation):
        self.location = location
        self._client = None

    def __repr__(self) -> str:
        return f"Blobs({self.location.uri})"

    @property
    def client(self):
        if self._client is None:
            self._client = self._new_client(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=16)
        return self._client

    def _new_client(self, **config):
        import boto3
        from botocore.config import Config

        opts = self.location.options
        return boto3.client(
            "s3", endpoint_url=opts.get("endpoint"), region_name=self.region,
            aws_access_key_id=opts.get("aws_access_key_id"),
            aws_secret_access_key=opts.get("aws_secret_access_key"),
            aws_session_token=opts.get("aws_session_token"),
            config=Config(**config),
        )

    @property
    def region(self) -> str:
        return self.location.options.get("region") or "us-east-1"

    def check(self) -> None:
        """List one key under the prefix, with short timeouts and one retry. `StorageUnavailable`, in one
        line naming the setting to fix, when the endpoint does not answer, the bucket does not exist,
        access is refused or there are no credentials."""
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        loc = self.location
        named = f"{loc.setting}={loc.uri}"
        where = loc.options.get("endpoint") or f"AWS S3 (region {self.region})"
        base = f"{loc.prefix}/" if loc.prefix else ""
        probe = self._new_client(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=20)
        try:
            probe.list_objects_v2(Bucket=loc.bucket, Prefix=base, MaxKeys=1)
        except NoCredentialsError:
            raise StorageUnavailable(f"{named}: no AWS credentials; set AWS_ACCESS_KEY_ID and "
                                     "AWS_SECRET_ACCESS_KEY") from None
        except ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code") or str(_status(exc))
            if code == "NoSuchBucket":
                raise StorageUnavailable(f"{named}: bucket {loc.bucket!r} does not exist at {where}; "
                                         f"create it, or fix {loc.setting}") from None
            if code in _ACCESS_REFUSED or _status(exc) == 403:
                raise StorageUnavailable(f"{named}: {where} refused access ({code}); check AWS_ACCESS_KEY_ID, "
                                         "AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN") from None
            detail = f"{code}: {error['Message']}" if error.get("Message") else code
            raise StorageUnavailable(f"{named}: {where} answered {detail}; check {loc.setting}, "
                                     "AWS_ENDPOINT_URL and AWS_REGION") from None
        except BotoCoreError as exc:  # nothing answers: connection refused, timeout, unknown host
            raise StorageUnavailable(f"{named}: cannot reach {where} ({type(exc).__name__}); "
                                     "check AWS_ENDPOINT_URL and the network") from None

    def key(self, name: str) -> str:
        if not name or name.startswith("/"):
            raise ValueError(f"not an object name: {name!r}")
        return f"{self.location.prefix}/{name}" if self.location.prefix else name

    def uri(self, name: str) -> str:
        return f"s3://{self.location.bucket}/{self.key(name)}"

    def put_file_if_absent(self, name: str, path: Path | str) -> bool:
        with open(path, "rb") as body:
            return self._put_if_absent(name, body)

    def put_fileobj_if_absent(self, name: str, body: BinaryIO) -> bool:
        """Like `put_file_if_absent`, from an open binary file positioned at its start."""
        return self._put_if_absent(name, body)

    def put_bytes_if_absent(self, name: str, data: bytes) -> bool:
        return self._put_if_absent(name, data)

    def _put_if_absent(self, name: str, body) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.put_object(Bucket=self.location.bucket, Key=self.key(name), Body=body, IfNoneMatch="*")
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if error.get("Code") in ("PreconditionFailed", "412") or _status(exc) == 412:
                return False
            if error.get("Code") == "ConditionalRequestConflict":  # a concurrent create of the same key
                return self.exists(name) is False and self._put_if_absent(name, _rewound(body))
            raise
        return True

    def exists(self, name: str) -> bool:
        return self.size(name) is not None

    def size(self, name: str) -> int | None:
        """The object's size, or None when there is none."""
        from botocore.exceptions import ClientError

        try:
            return int(self.client.head_object(Bucket=self.location.bucket, Key=self.key(name))["ContentLength"])
        except ClientError as exc:
            if _status(exc) == 404:
                return None
            raise

    def download(self, name: str, out: BinaryIO) -> int:
        """Stream the object into ``out``; returns its size. FileNotFoundError when it does not exist."""
        body = self._get(name)
        total = 0
        try:
            while block := body.read(BLOCK):
                out.write(block)
                total += len(block)
        finally:
            body.close()
        return total

    def get_bytes(self, name: str) -> bytes:
        body = self._get(name)
        try:
            return body.read()
        finally:
            body.close()

    def _get(self, name: str):
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.location.bucket, Key=self.key(name))["Body"]
        except ClientError as exc:
            if _status(exc) == 404 or exc.response.get("Error", {}).get("Code") == "NoSuchKey":
                raise FileNotFoundError(f"{self.uri(name)} does not exist") from None
            raise

    def list(self, prefix: str = "", start_after: str | None = None) -> Iterator[BlobInfo]:
        """Objects whose name starts with ``prefix`` (and sorts after ``start_after``), in key order."""
        base = f"{self.location.prefix}/" if self.location.prefix else ""
        args = {"Bucket": self.location.bucket, "Prefix": base + prefix}
        if start_after:
            args["StartAfter"] = base + start_after
        for page in self.client.get_paginator("list_objects_v2").paginate(**args):
            for item in page.get("Contents", []):
                yield BlobInfo(item["Key"][len(base):], int(item["Size"]), item["LastModified"])

    def copy(self, source: str, target: str) -> None:
        bucket = self.location.bucket
        self.client.copy({"Bucket": bucket, "Key": self.key(source)}, bucket, self.key(target))

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.location.bucket, Key=self.key(name))


def _status(exc) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


def _rewound(body):
    if hasattr(body, "seek"):
        body.seek(0)
    return body
