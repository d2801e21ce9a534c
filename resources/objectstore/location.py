"""`StorageLocation`: one URI (``s3://bucket/prefix``) and the standard AWS variables, read once.

The URI puts the Lance tables under ``<uri>/lance`` and the packs under ``<uri>/packs``. Credentials,
region and endpoint come from the variables every S3 tool reads (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` or ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL``); ``AWS_ALLOW_HTTP=true`` allows a plain-HTTP endpoint (a test server on
loopback), which is otherwise refused. Nothing here touches the network (`Blobs.check` does).

A URI or endpoint that cannot be used raises `StorageUriError` naming the variable to fix; a location
that parses but cannot be reached or used is reported by `Blobs.check` as `StorageUnavailable`.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass, field
from urllib.parse import urlparse

from resources.config.errors import SettingError, StorageUnavailable

__all__ = ["StorageLocation", "StorageUnavailable", "StorageUriError"]

SCHEMES = ("s3",)
_ENV_OPTIONS = {
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
    "region": "AWS_REGION",
    "endpoint": "AWS_ENDPOINT_URL",
    "allow_http": "AWS_ALLOW_HTTP",
}


class StorageUriError(SettingError):
    """The storage URI (or the endpoint it is reached at) cannot be used; the message names the variable,
    says why and what is accepted."""


@dataclass(frozen=True)
class StorageLocation:
    """A bucket and a prefix in it, with the options to reach it (strings, as Lance takes them)."""

    bucket: str
    prefix: str = ""
    options: dict[str, str] = field(default_factory=dict, compare=False, repr=False)
    setting: str = field(default="storage URI", compare=False, repr=False)
    """The variable the URI came from, named in error messages."""

    @classmethod
    def parse(cls, uri: str, env: dict[str, str] | None = None, setting: str = "storage URI") -> StorageLocation:
        """``s3://bucket[/prefix]``, options from ``env`` (default: the process environment); ``setting`` is
        the variable ``uri`` came from. `StorageUriError` when the URI or ``AWS_ENDPOINT_URL`` is unusable."""
        env = os.environ if env is None else env
        parsed = urlparse(uri.strip())
        if parsed.scheme not in SCHEMES:
            why = f"scheme {parsed.scheme + '://'!r} is not supported" if parsed.scheme else "it has no scheme"
            raise StorageUriError(f"{setting}={uri!r}: {why}; use s3://BUCKET[/PREFIX], or unset {setting}")
        if not parsed.netloc:
            raise StorageUriError(f"{setting}={uri!r} names no bucket; use s3://BUCKET[/PREFIX], or unset {setting}")
        if parsed.query or parsed.fragment:
            raise StorageUriError(f"{setting}={uri!r}: no query or fragment allowed; "
                                  "endpoint and credentials come from the AWS_* variables")
        options = {key: env[var] for key, var in _ENV_OPTIONS.items() if env.get(var)}
        if "region" not in options and env.get("AWS_DEFAULT_REGION"):
            options["region"] = env["AWS_DEFAULT_REGION"]
        location = cls(parsed.netloc, parsed.path.strip("/"), options, setting)
        location._check_endpoint()
        if importlib.util.find_spec("boto3") is None:  # an extra: a machine without buckets does without it
            raise StorageUriError(f"{setting}={uri!r}: buckets need boto3, which is not installed; "
                                  "pip install 'sessionlake[s3]', or unset " + setting)
        return location

    def _check_endpoint(self) -> None:
        endpoint = self.options.get("endpoint")
        if endpoint is None:
            return
        parsed = urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise StorageUriError(f"AWS_ENDPOINT_URL={endpoint!r} is not a URL (https://HOST[:PORT]), "
                                  f"so {self.setting} cannot be reached")
        if parsed.scheme == "http" and not self.allow_http:
            raise StorageUriError(f"AWS_ENDPOINT_URL={endpoint!r} is plain HTTP, refused unless "
                                  "AWS_ALLOW_HTTP=true (a test server on loopback); use https://")

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def child(self, *parts: str) -> StorageLocation:
        """The location ``parts`` below this one, with the same options."""
        prefix = "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))
        return StorageLocation(self.bucket, prefix, self.options, self.setting)

    @property
    def allow_http(self) -> bool:
        return self.options.get("allow_http", "").lower() in ("1", "true", "yes")

    def lance_options(self) -> dict[str, str]:
        """``storage_options`` for ``lancedb.connect``: the same credentials, endpoint and region."""
        return dict(self.options)

    def blobs(self):
        """An object-store client rooted at this location (`resources.objectstore.blobs.Blobs`)."""
        from resources.objectstore.blobs import Blobs

        return Blobs(self)
