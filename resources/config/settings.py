"""Every path and knob sessionlake reads from the environment, in one place.

`Settings.from_env()` is the only reader of ``SESSIONLAKE_*`` variables; everything else takes a
`Settings` (or one of its paths) as an argument, so tests build one pointing at a tmp dir. It checks
every value before it returns (a bad one raises `SettingError`, one line naming the variable and what
it accepts) and changes nothing: it creates no folder and leaves the umask alone. Making the data home
private is the entry points' explicit call (`resources.config.private_home.make_private`). Nothing
reads the environment when a module is imported.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import NamedTuple

from resources.config.errors import SettingError

__all__ = ["DAGSTER_STORAGES", "SettingError", "Settings"]


def _env_path(name: str, default: Path) -> Path:
    value = os.environ.get(name)
    return Path(value).expanduser() if value else default


def _env_float(name: str, default: float, floor: float | None = None, *, above: bool = False) -> float:
    """The number in ``name`` (``default`` when unset or empty); `SettingError` when it is not a number or
    is below ``floor`` (or equal to it, with ``above``)."""
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = float(value)
    except ValueError as exc:
        raise SettingError(f"{name}={value!r} is not a number") from exc
    if floor is not None and (number < floor or (above and number == floor)):
        raise SettingError(f"{name}={value!r} must be {'>' if above else '>='} {floor:g}")
    return number


def _login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name for this uid (a container)
        return f"uid-{os.getuid()}"


def _hostname() -> str:
    """The machine's name, as ``socket.gethostname()`` gives it (without importing socket where uname tells it)."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


def _env_int(name: str, default: int, floor: int | None = None, *, above: bool = False) -> int:
    return int(_env_float(name, default, floor, above=above))


def _env_choice(name: str, choices: tuple[str, ...]) -> str:
    """One of ``choices`` (the first is the default), case-insensitive."""
    value = (os.environ.get(name) or choices[0]).strip().lower()
    if value not in choices:
        raise SettingError(f"{name}={os.environ[name]!r}: use one of {', '.join(choices)} (default {choices[0]})")
    return value


def _env_owners(name: str) -> tuple[str, ...]:
    """Dagster asset owners from a comma-separated variable: e-mail addresses or ``team:NAME``."""
    owners = tuple(item.strip() for item in os.environ.get(name, "").split(",") if item.strip())
    for owner in owners:
        if not (owner.startswith("team:") and len(owner) > 5) and "@" not in owner.strip("@"):
            raise SettingError(f"{name}={os.environ[name]!r}: {owner!r} is neither an e-mail address nor team:NAME")
    return owners


def _env_list(name: str) -> list[Path] | None:
    """The folders of a comma-separated variable (``~`` expanded), or None when it is not set."""
    value = os.environ.get(name)
    if value is None:
        return None
    return [Path(item.strip()).expanduser() for item in value.split(",") if item.strip()]


def _agent_folders(own: str, ccusage: str, default: Path) -> list[Path]:
    """``own`` (sessionlake's variable, one folder), else ``ccusage``'s list (those that exist, or its
    first entry when none does), else ``default``."""
    if os.environ.get(own):
        return [_env_path(own, default)]
    listed = _env_list(ccusage)
    if not listed:
        return [default]
    return [p for p in listed if p.is_dir()] or listed[:1]


def _claude_folders(home: Path) -> list[Path]:
    """Claude Code's projects folders (see `Settings.agent_folders_from_env`)."""
    if os.environ.get("SESSIONLAKE_SESSIONS_DIR"):
        return [_env_path("SESSIONLAKE_SESSIONS_DIR", home)]
    listed = _env_list("CLAUDE_CONFIG_DIR")
    if listed is not None:
        found = [p if p.name == "projects" and p.is_dir() else p / "projects" for p in listed]
        found = [p for p in found if p.is_dir()]
        if not found:
            raise SettingError(f"CLAUDE_CONFIG_DIR={os.environ['CLAUDE_CONFIG_DIR']!r}: no folder in it holds "
                               "projects/ (name Claude config folders, or their projects/ folders, comma-separated)")
        return found
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config").expanduser()
    both = [config / "claude" / "projects", home / ".claude" / "projects"]
    return [p for p in both if p.is_dir()] or both[1:]


DAGSTER_STORAGES = ("sqlite", "postgres")
SYNC_PROJECTS = ("name", "hash")
COST_MODES = ("auto", "calculate", "display")
"""How a cost is found (resources/usage/pricing.py): the first is the default."""


class Settings(NamedTuple):
    """Resolved configuration. Paths are absolute; derived folders hang off ``home``. Immutable; a copy with
    other values is ``settings._replace(name=value)``. A named tuple, not a dataclass: every command reads the
    settings, and ``dataclasses`` (with ``inspect``) and building a frozen dataclass cost 10 ms a start."""

    home: Path
    sessions_dir: Path
    price_file: Path | None = None
    cost_mode: str = "auto"
    embedder: str | None = None
    embedder_model: str | None = None
    capture_max_size: int = 10_000
    capture_max_record_bytes: int = 1 << 20
    lance_versions_threshold: int = 100
    lance_small_fragments_threshold: int = 32
    lance_retention_floor_sec: float = 3600.0
    pack_gc_live_packs_threshold: int = 8
    pack_gc_grace_sec: float = 3600.0
    sensor_max_new_partitions: int = 500
    pool_wait_sec: float = 600.0
    warehouse_lock_wait_sec: float = 120.0
    """How long a command waits for the warehouse while another process holds it (DuckDB allows one writer
    at a time) before it gives up saying which process (SESSIONLAKE_WAREHOUSE_LOCK_WAIT_SEC)."""
    report_cache: bool = True
    """``sessionlake usage`` prints a stored report again when nothing it depends on changed
    (resources/usage/report_cache.py); SESSIONLAKE_REPORT_CACHE=off computes every report."""
    sensor_interval_sec: int = 60
    """How often the session sensor looks for changed files (SESSIONLAKE_SENSOR_INTERVAL_SEC)."""
    lance_optimize_interval_sec: float = 3600.0
    """How often the Lance health sensor optimizes when no threshold is crossed (``periodic``;
    SESSIONLAKE_LANCE_OPTIMIZE_INTERVAL_SEC)."""
    lance_optimize_retention_sec: float = 86400.0
    """Lance versions younger than this survive a prune (SESSIONLAKE_LANCE_OPTIMIZE_RETENTION_SEC); a run
    refuses less than ``lance_retention_floor_sec`` unless forced."""
    """How long ``sessionlake ingest`` waits for a pool slot held by another live run before giving up."""
    dagster_storage: str = "sqlite"
    """Which instance template (pipelines/instance/home.py) a new ``DAGSTER_HOME`` gets: ``sqlite`` or ``postgres``."""
    sessions_dir_explicit: bool = False
    """``sessions_dir`` was named by the user (SESSIONLAKE_SESSIONS_DIR), not the default: missing is an error."""
    codex_home: Path | None = None
    """Codex's home (``sessions/``, ``archived_sessions/``); None: Codex is not read."""
    gemini_dir: Path | None = None
    """Gemini CLI's ``.gemini`` folder (``tmp/<project>/chats/``); None: Gemini is not read."""
    opencode_dir: Path | None = None
    """OpenCode's data folder (``opencode.db``, ``storage/``); None: OpenCode is not read."""
    qwen_dir: Path | None = None
    """Qwen Code's ``.qwen`` folder (``projects/<project>/chats/``); None: Qwen Code is not read."""
    storage_uri: str | None = None
    """``s3://bucket/prefix`` for the Lance tables and the packs (SESSIONLAKE_STORAGE_URI); None: under ``home``."""
    team_uri: str | None = None
    """The team bucket ``sessionlake push`` sends to and the central deployment ingests from (SESSIONLAKE_TEAM_URI)."""
    user: str = ""
    """Who this machine's pushes are attributed to (SESSIONLAKE_USER, default the login name)."""
    machine: str = ""
    """This machine's name in pushes (SESSIONLAKE_MACHINE, default the host name)."""
    sync_uri: str | None = None
    """Where ``sessionlake sync`` meets this person's other machines (SESSIONLAKE_SYNC_URI): ``s3://BUCKET/PREFIX``
    or a folder (a NAS, a Dropbox or iCloud Drive folder); None: no sync."""
    sync_projects: str = "name"
    """How project names leave the machine in a sync (SESSIONLAKE_SYNC_PROJECTS): ``name``, or ``hash`` (keyed
    with ``sync_key``)."""
    sync_key: str | None = None
    owners: tuple[str, ...] = ()
    """The owners every asset shows in the Dagster UI (SESSIONLAKE_OWNERS: e-mail addresses or team:NAME)."""
    """The key of hashed project names (SESSIONLAKE_SYNC_KEY), the same on every machine of one person."""

    more_roots: tuple[tuple[str, Path], ...] = ()
    """``(agent, folder)``: further folders ccusage reads for an agent, after its root above (Claude
    Code's ``~/.claude/projects`` beside ``~/.config/claude/projects``, every entry of a comma-separated
    ``CLAUDE_CONFIG_DIR``, ``CODEX_HOME``, ``GEMINI_DATA_DIR``, ``OPENCODE_DATA_DIR``, ``QWEN_DATA_DIR``
    after the first)."""

    def agent_roots(self) -> dict[str, Path]:
        """Each agent that is read, with its root (which may not exist: such an agent is skipped)."""
        roots = {"claude": self.sessions_dir, "codex": self.codex_home, "gemini": self.gemini_dir,
                 "opencode": self.opencode_dir, "qwen": self.qwen_dir}
        return {agent: root for agent, root in roots.items() if root is not None}

    def all_agent_roots(self) -> list[tuple[str, Path]]:
        """Every ``(agent, folder)`` read: each agent's root, then its `more_roots`, in ccusage's order."""
        roots = self.agent_roots()
        return [*roots.items(), *((agent, root) for agent, root in self.more_roots if agent in roots)]

    @property
    def state_path(self) -> Path:
        return self.home / "state.duckdb"

    @property
    def sensor_state_path(self) -> Path:
        """The session sensor's own state (resources/state/sensor_state.py): a file no run or report holds."""
        return self.home / "sensors.duckdb"

    @property
    def lance_dir(self) -> Path:
        return self.home / "lance"

    @property
    def packs_dir(self) -> Path:
        """The packs; with a storage URI, only temp files of packs being written (the packs are in the bucket)."""
        return self.home / "packs"

    @property
    def storage(self):
        """The `StorageLocation` of ``storage_uri``, or None when everything stays under ``home``."""
        if not self.storage_uri:  # nothing to parse: every command checks, most have no URI set
            return None
        from resources.objectstore.location import StorageLocation

        return StorageLocation.parse(self.storage_uri, setting="SESSIONLAKE_STORAGE_URI")

    @property
    def team(self):
        """The `StorageLocation` of ``team_uri``, or None."""
        if not self.team_uri:
            return None
        from resources.objectstore.location import StorageLocation

        return StorageLocation.parse(self.team_uri, setting="SESSIONLAKE_TEAM_URI")

    def check_storage(self) -> None:
        """With a storage URI, one request to its bucket: `StorageUnavailable` (naming the setting to fix) when
        the bucket cannot be reached or used. Commands call it before they touch the Lance tables or the packs,
        so a wrong endpoint, bucket or key fails in one line, at once, with nothing half done."""
        if self.storage is not None:
            self.storage.blobs().check()

    @property
    def sync(self) -> str | None:
        """``sync_uri`` checked (`StorageUriError` naming the variable): an ``s3://`` URI or an absolute folder."""
        if not self.sync_uri:
            return None
        from resources.sync.location import parse_sync_uri

        return parse_sync_uri(self.sync_uri)

    @property
    def capture_dir(self) -> Path:
        return self.home / "capture"

    @property
    def provenance_overflow_dir(self) -> Path:
        return self.home / "provenance-overflow"

    @property
    def dagster_home(self) -> Path:
        """The Dagster instance the CLI uses when ``DAGSTER_HOME`` is not set (pipelines/instance/home.py)."""
        return self.home / "dagster"

    @property
    def retry_dir(self) -> Path:
        """Markers of projects with files that failed, for the session sensor (resources/ingest/retry_marks.py)."""
        return self.home / "retry"

    @staticmethod
    def agent_folders_from_env() -> dict[str, list[Path]]:
        """Where each agent keeps its sessions, found the way ccusage 20 finds them, in its order:

        - Claude Code: every folder of ``CLAUDE_CONFIG_DIR`` (comma-separated; a config folder holding
          ``projects/``, or that ``projects/`` folder itself; none that does is an error, as in ccusage),
          else ``$XDG_CONFIG_HOME/claude/projects`` (``~/.config/...``) and ``~/.claude/projects``, those
          that exist (``~/.claude/projects`` when neither does);
        - Codex ``CODEX_HOME``, Gemini CLI ``GEMINI_DATA_DIR`` (its ``tmp`` folder), OpenCode
          ``OPENCODE_DATA_DIR``, Qwen Code ``QWEN_DATA_DIR``: comma-separated lists, those that exist
          (the first when none does); else ``~/.codex``, ``~/.gemini`` (under ``GEMINI_CLI_HOME``),
          ``~/.local/share/opencode`` (under ``XDG_DATA_HOME``), ``~/.qwen``.

        ``SESSIONLAKE_SESSIONS_DIR`` and ``SESSIONLAKE_<AGENT>_DIR`` name one folder and win over these;
        ``SESSIONLAKE_AGENTS`` (comma-separated) limits which agents are read."""
        home = Path.home()
        gemini = os.environ.get("GEMINI_CLI_HOME")
        data = os.environ.get("XDG_DATA_HOME")
        folders = {
            "claude": _claude_folders(home),
            "codex": _agent_folders("SESSIONLAKE_CODEX_DIR", "CODEX_HOME", home / ".codex"),
            "gemini": [p.parent if p.name == "tmp" else p for p in _agent_folders(  # ccusage names .gemini/tmp
                "SESSIONLAKE_GEMINI_DIR", "GEMINI_DATA_DIR",
                (Path(gemini).expanduser() if gemini else home) / ".gemini")],
            "opencode": _agent_folders("SESSIONLAKE_OPENCODE_DIR", "OPENCODE_DATA_DIR",
                                       (Path(data).expanduser() if data else home / ".local" / "share") / "opencode"),
            "qwen": _agent_folders("SESSIONLAKE_QWEN_DIR", "QWEN_DATA_DIR", home / ".qwen"),
        }
        wanted = os.environ.get("SESSIONLAKE_AGENTS", "").strip()
        enabled = {a.strip() for a in wanted.split(",") if a.strip()} if wanted else set(folders) - {"claude"}
        enabled.add("claude")  # Claude Code is always read (SESSIONLAKE_SESSIONS_DIR names its folder)
        return {agent: list(dict.fromkeys(p.resolve() for p in paths))
                for agent, paths in folders.items() if agent in enabled}

    @classmethod
    def from_env(cls, check_uris: bool = True) -> Settings:
        """The settings, every value checked (`SettingError` for the first bad one); nothing is written.

        ``check_uris``: parse the storage and team URIs now, so a bad one fails at start, not half way
        through a run (`StorageUriError`). Only a command that never touches a bucket turns it off."""
        price_file = os.environ.get("SESSIONLAKE_PRICE_FILE")
        settings = cls(
            home=_env_path("SESSIONLAKE_HOME", Path.home() / ".sessionlake").resolve(),
            sessions_dir=(folders := cls.agent_folders_from_env())["claude"][0],
            price_file=Path(price_file).expanduser() if price_file else None,
            cost_mode=_env_choice("SESSIONLAKE_COST_MODE", COST_MODES),
            embedder=os.environ.get("SESSIONLAKE_EMBEDDER") or None,
            embedder_model=os.environ.get("SESSIONLAKE_EMBEDDER_MODEL") or None,
            capture_max_size=_env_int("SESSIONLAKE_CAPTURE_MAX_SIZE", 10_000, 0, above=True),
            capture_max_record_bytes=_env_int("SESSIONLAKE_CAPTURE_MAX_RECORD_BYTES", 1 << 20, 0, above=True),
            lance_versions_threshold=_env_int("SESSIONLAKE_LANCE_VERSIONS_THRESHOLD", 100, 0),
            lance_small_fragments_threshold=_env_int("SESSIONLAKE_LANCE_SMALL_FRAGMENTS_THRESHOLD", 32, 0),
            lance_retention_floor_sec=_env_float("SESSIONLAKE_LANCE_RETENTION_FLOOR_SEC", 3600.0, 0),
            pack_gc_live_packs_threshold=_env_int("SESSIONLAKE_PACK_GC_LIVE_PACKS", 8, 0),
            pack_gc_grace_sec=_env_float("SESSIONLAKE_PACK_GC_GRACE_SEC", 3600.0, 0),
            sensor_max_new_partitions=_env_int("SESSIONLAKE_SENSOR_MAX_NEW_PARTITIONS", 500, 0, above=True),
            pool_wait_sec=_env_float("SESSIONLAKE_POOL_WAIT_SEC", 600.0, 0),
            warehouse_lock_wait_sec=_env_float("SESSIONLAKE_WAREHOUSE_LOCK_WAIT_SEC", 120.0, 0),
            report_cache=_env_choice("SESSIONLAKE_REPORT_CACHE", ("on", "off")) == "on",
            sensor_interval_sec=_env_int("SESSIONLAKE_SENSOR_INTERVAL_SEC", 60, 0, above=True),
            lance_optimize_interval_sec=_env_float("SESSIONLAKE_LANCE_OPTIMIZE_INTERVAL_SEC", 3600.0, 0, above=True),
            lance_optimize_retention_sec=_env_float("SESSIONLAKE_LANCE_OPTIMIZE_RETENTION_SEC", 86400.0, 0),
            dagster_storage=_env_choice("SESSIONLAKE_DAGSTER_STORAGE", DAGSTER_STORAGES),
            sessions_dir_explicit=bool(os.environ.get("SESSIONLAKE_SESSIONS_DIR")),
            codex_home=(roots := {agent: paths[0] for agent, paths in folders.items()}).get("codex"),
            gemini_dir=roots.get("gemini"),
            opencode_dir=roots.get("opencode"),
            qwen_dir=roots.get("qwen"),
            more_roots=tuple((agent, path) for agent, paths in folders.items() for path in paths[1:]),
            storage_uri=os.environ.get("SESSIONLAKE_STORAGE_URI") or None,
            team_uri=os.environ.get("SESSIONLAKE_TEAM_URI") or None,
            user=os.environ.get("SESSIONLAKE_USER") or _login(),
            machine=os.environ.get("SESSIONLAKE_MACHINE") or _hostname(),
            sync_uri=os.environ.get("SESSIONLAKE_SYNC_URI") or None,
            sync_projects=_env_choice("SESSIONLAKE_SYNC_PROJECTS", SYNC_PROJECTS),
            sync_key=os.environ.get("SESSIONLAKE_SYNC_KEY") or None,
            owners=_env_owners("SESSIONLAKE_OWNERS"),
        )
        if settings.sync_projects == "hash" and not settings.sync_key:
            raise SettingError("SESSIONLAKE_SYNC_PROJECTS=hash needs SESSIONLAKE_SYNC_KEY (any secret phrase, the same "
                               "on each of your machines, so a project hashes alike on all of them)")
        if check_uris:
            _ = settings.storage, settings.team, settings.sync
        return settings
