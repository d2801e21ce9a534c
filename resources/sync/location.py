"""Where ``SESSIONLAKE_SYNC_URI`` points: an ``s3://`` bucket (`Blobs`, reached with the AWS variables as
the storage and team buckets are) or a folder (`FolderBlobs`: an absolute path, ``~`` allowed, or ``file://``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from resources.objectstore.location import StorageLocation, StorageUriError

SETTING = "SESSIONLAKE_SYNC_URI"


def parse_sync_uri(uri: str) -> str:
    """``uri`` checked and normalised: an ``s3://`` URI as given, a folder as an absolute path.
    `StorageUriError` (naming the variable) when it is neither."""
    uri = uri.strip()
    if uri.startswith("s3://"):
        StorageLocation.parse(uri, setting=SETTING)
        return uri
    path = urlparse(uri).path if uri.startswith("file://") else uri
    folder = Path(path).expanduser()
    if "://" in uri and not uri.startswith("file://"):
        raise StorageUriError(f"{SETTING}={uri!r}: use s3://BUCKET[/PREFIX] or a folder path")
    if not folder.is_absolute():
        raise StorageUriError(f"{SETTING}={uri!r} is a relative path; use an absolute folder path "
                              "(a cron job or hook runs elsewhere)")
    return str(folder)


def sync_location(uri: str):
    """The location (`StorageLocation` or `FolderLocation`) of a URI `parse_sync_uri` accepted."""
    from resources.objectstore.folder import FolderLocation

    if uri.startswith("s3://"):
        return StorageLocation.parse(uri, setting=SETTING)
    return FolderLocation(Path(uri), setting=SETTING)


def open_location(uri: str):
    """The blob client (`Blobs` or `FolderBlobs`) of a URI `parse_sync_uri` accepted."""
    return sync_location(uri).blobs()
