"""`StorageLocation`: one URI (``s3://bucket/prefix``) and the standard AWS variables, read once.

The URI puts the Lance tables under ``<uri>/lance`` and the packs under ``<uri>/packs``. Credentials,
region and endpoint come from the variables every S3 tool reads (``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` or ``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL``); ``AWS_ALLOW_HTTP=true`` allows a plain-HTTP endpoint (a test server on
loopback), which is otherwise refused. Nothing here touches the network.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from urllib.parse import urlparse

SCHEMES = ("s3",)
_ENV_OPTIONS = {
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
    "aws_session_token": "AWS_SESSION_TOKEN",
    "region": "AWS_REGION",
    "endpoint": "AWS_ENDPOINT_URL",
    "allow_http": "AWS_ALLOW_HTTP",
}


class StorageUriError(ValueError):
    """The storage URI cannot be used; the message says why and what is accepted."""


@dataclass(frozen=True)
class StorageLocation:
    """A bucket and a prefix in it, with the options to reach it (strings, as Lance takes them)."""

    bucket: str
    prefix: str = ""
    options: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def parse(cls, uri: str, env: dict[str, str] | None = None) -> StorageLocation:
        """``s3://bucket[/prefix]``, options from ``env`` (default: the process environment)."""
        env = os.environ if env is None else env
        parsed = urlparse(uri.strip())
        if parsed.scheme not in SCHEMES or not parsed.netloc:
            raise StorageUriError(f"storage URI {uri!r} is not s3://BUCKET[/PREFIX] "
                                  "(unset SESSIONLAKE_STORAGE_URI to keep everything in SESSIONLAKE_HOME)")
        if parsed.query or parsed.fragment:
            raise StorageUriError(f"storage URI {uri!r}: no query or fragment allowed; "
                                  "endpoint and credentials come from the AWS_* variables")
        options = {key: env[var] for key, var in _ENV_OPTIONS.items() if env.get(var)}
        if "region" not in options and env.get("AWS_DEFAULT_REGION"):
            options["region"] = env["AWS_DEFAULT_REGION"]
        return cls(parsed.netloc, parsed.path.strip("/"), options)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def child(self, *parts: str) -> StorageLocation:
        """The location ``parts`` below this one, with the same options."""
        prefix = "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))
        return StorageLocation(self.bucket, prefix, self.options)

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
