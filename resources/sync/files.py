"""The sync file: one Parquet file of usage rows from one machine, immutable and named by its content.

Name: ``usage/<machine>/<id>/<first>-<last>-<digest>.parquet``. ``first`` and ``last`` are the
machine's sync numbers the file covers (equal for one sync; a range for a compacted file), ``digest``
the first 16 hex digits of the SHA-256 of the file's bytes, so a file is checked against its name
when read and two writers never produce one name for different bytes.

Content (`SCHEMA`): per API response the usage key, message and request ids, time, session id, a
digest of the session file's key (``session_ref``: never the path), project (its name, or a keyed
hash with ``SESSIONLAKE_SYNC_PROJECTS=hash``), model, agent, sidechain flag, subagent id, token
counts, cost (the transcript's own, and the one computed when it was synced), and ``clock``: the
logical time of the sync that first wrote the row. No prompt, response, path, branch or credential.
The file's key-value metadata ``sessionlake.sync`` holds the `Header` (format, version, user,
machine, id, whether projects are hashed). A file this version cannot read (another format, a newer
version, a broken digest or schema) raises `SyncFileError`.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
from dataclasses import asdict, dataclass

import pyarrow as pa

from resources.config.settings import SYNC_PROJECTS
from resources.usage.warehouse import usage_schema

FORMAT = "sessionlake-sync"
VERSION = 1
PREFIX = "usage/"
METADATA_KEY = b"sessionlake.sync"
NAME = re.compile(r"^usage/(?P<machine>[A-Za-z0-9._@+-]{1,128})/(?P<id>[0-9a-f]{12})/"
                  r"(?P<first>\d{10})-(?P<last>\d{10})-(?P<digest>[0-9a-f]{16})\.parquet$")


_WAREHOUSE = usage_schema()
SCHEMA = pa.schema([
    *(_WAREHOUSE.field(n) for n in ("dedup_key", "message_id", "request_id", "ts", "session_id")),
    pa.field("session_ref", pa.string()),
    *(_WAREHOUSE.field(n) for n in ("project", "model", "agent", "is_sidechain", "agent_id", "input_tokens",
                                    "output_tokens", "cache_creation_tokens", "cache_read_tokens",
                                    "cache_creation_1h_tokens", "extra_output_tokens", "reasoning_output_tokens",
                                    "cost_usd")),
    pa.field("computed_cost_usd", pa.float64()),
    _WAREHOUSE.field("line_offset"),
    pa.field("clock", pa.int64()),
])
COLUMNS = tuple(SCHEMA.names)


class SyncFileError(ValueError):
    """A file in the sync location that this version cannot use; the message says which and why."""


@dataclass(frozen=True)
class Header:
    """Who wrote a file: user and machine (as reports show them), the data home's ``id``, how projects
    are named (``name`` or ``hash``)."""

    user: str
    machine: str
    id: str
    projects: str = "name"
    format: str = FORMAT
    version: int = VERSION

    @property
    def source(self) -> str:
        """The writer's folder below ``usage/``: ``<machine>/<id>``."""
        return f"{self.machine}/{self.id}"


@dataclass(frozen=True)
class FileName:
    name: str
    source: str
    first: int
    last: int
    digest: str

    @classmethod
    def parse(cls, name: str) -> FileName | None:
        """The parts of a sync file's name, or None for any other name (a foreign file)."""
        m = NAME.match(name)
        if m is None:
            return None
        return cls(name, f"{m['machine']}/{m['id']}", int(m["first"]), int(m["last"]), m["digest"])


def project_hash(key: bytes, project: str) -> str:
    """A project's name as it leaves the machine under ``SESSIONLAKE_SYNC_PROJECTS=hash``: a keyed hash
    (the same on every machine with the same key, so a project's rows still group together)."""
    return "#" + hmac.new(key, project.encode(), hashlib.sha256).hexdigest()[:16]


def session_ref(session_key: str) -> str:
    return hashlib.sha256(session_key.encode()).hexdigest()[:20]


def encode(rows: pa.Table, header: Header, first: int, last: int) -> tuple[str, bytes]:
    """The name and bytes of a file holding ``rows`` (in `SCHEMA`)."""
    import pyarrow.parquet as pq

    rows = rows.select(list(COLUMNS)).cast(SCHEMA)
    rows = rows.replace_schema_metadata({METADATA_KEY: json.dumps(asdict(header), sort_keys=True).encode()})
    out = io.BytesIO()
    pq.write_table(rows, out, compression="zstd")
    data = out.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:16]
    return f"{PREFIX}{header.source}/{first:010d}-{last:010d}-{digest}.parquet", data


def decode(name: FileName, data: bytes) -> tuple[Header, pa.Table]:
    """The header and rows of the file ``name`` holding ``data``; `SyncFileError` when it is not usable."""
    import pyarrow.parquet as pq

    if hashlib.sha256(data).hexdigest()[:16] != name.digest:
        raise SyncFileError(f"{name.name}: its content does not match its name (damaged or truncated)")
    try:
        pf = pq.ParquetFile(io.BytesIO(data))
        meta = json.loads((pf.schema_arrow.metadata or {}).get(METADATA_KEY, b"null"))
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise SyncFileError(f"{name.name}: not a {FORMAT} file")
        if meta.get("version") != VERSION:
            raise SyncFileError(f"{name.name}: {FORMAT} version {meta.get('version')!r}; this sessionlake reads "
                                f"version {VERSION} (upgrade it on this machine)")
        header = Header(**meta)
        if header.source != name.source or header.projects not in SYNC_PROJECTS:
            raise SyncFileError(f"{name.name}: written by {header.source}, found under {name.source}")
        missing = set(COLUMNS) - set(pf.schema_arrow.names)
        if missing:
            raise SyncFileError(f"{name.name}: no column(s) {', '.join(sorted(missing))}")
        table = pf.read(columns=list(COLUMNS)).cast(SCHEMA)
    except SyncFileError:
        raise
    except (pa.ArrowException, ValueError, TypeError, OSError) as exc:
        raise SyncFileError(f"{name.name}: {type(exc).__name__}: {exc}") from None
    return header, table
