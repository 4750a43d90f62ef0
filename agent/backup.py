"""`patrol backup` and `patrol restore`: the site's SQLite files, copied safely.

A backup runs beside a running Patrol: SQLite's online backup copies each file as one
consistent snapshot (WAL mode lets the agent go on writing meanwhile). It holds the
buffer (readings not yet in the TSDB, NC events not yet delivered, the rule state) and,
when it is SQLite, the NC database; `backup.json` lists them with their sizes and
SHA-256. A PostgreSQL NC database is backed up with its own tool, `pg_dump`
(docs/deploy.md).

A restore puts them back while Patrol is stopped: every file is checked first (its
SHA-256 and SQLite's integrity check), nothing is overwritten without `force`, a file
some process still has open is refused, and each file replaces the old one in one
rename, its stale `-wal` and `-shm` removed (a WAL left from the old file would be
replayed into the restored one).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from agent.site import Site

MANIFEST = "backup.json"


class BackupError(RuntimeError):
    """A backup or restore that cannot go on; the message says why and what to do."""


def _files(site: Site) -> dict[str, Path]:
    """What a backup holds, by its name in the backup folder."""
    files = {"buffer.sqlite": site.config.buffer.path}
    database = site.config.server.database
    if database.startswith("sqlite:///") and ":memory:" not in database:
        files["patrol.sqlite"] = Path(database.removeprefix("sqlite:///"))
    return files


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def backup(site: Site, target: Path) -> list[str]:
    """Copy the site's SQLite files into `target` (a new or empty folder); the lines say
    what was copied and what was not."""
    target.mkdir(parents=True, exist_ok=True)
    if any(target.iterdir()):
        raise BackupError(f"{target} is not empty: back up into a new folder")
    lines, listed = [], {}
    for name, source in _files(site).items():
        if not source.exists():
            lines.append(f"{name}: {source} does not exist yet: skipped")
            continue
        copy = target / name
        with contextlib.closing(sqlite3.connect(f"file:{quote(str(source))}?mode=ro",
                                                uri=True, timeout=30)) as src, \
                contextlib.closing(sqlite3.connect(copy)) as dst:
            src.backup(dst)  # every page in one step: one consistent snapshot
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        listed[name] = {"source": str(source), "bytes": copy.stat().st_size,
                        "sha256": _sha256(copy)}
        lines.append(f"{name}: {source} -> {copy} ({copy.stat().st_size} bytes)")
    if not site.config.server.database.startswith("sqlite"):
        lines.append("NC database: PostgreSQL: back it up with pg_dump (docs/deploy.md)")
    manifest = {"site_id": site.id, "at": datetime.now(UTC).isoformat(), "files": listed}
    (target / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return lines


def _open_by_a_process(path: Path) -> int | None:
    """The pid of a process that has `path` open (Linux /proc), if any is seen."""
    wanted = {str(path.resolve()), f"{path.resolve()}-wal"}
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        return int(fd_dir.parent.name)
    return None


def restore(site: Site, source: Path, *, force: bool = False) -> list[str]:
    """Put a backup's files back in the site's places; BackupError before anything is
    changed when a file is damaged, in use, or would be overwritten without `force`."""
    try:
        manifest: dict[str, Any] = json.loads((source / MANIFEST).read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{source / MANIFEST} cannot be read ({exc}): not a patrol "
                          "backup folder") from None
    if manifest.get("site_id") != site.id:
        raise BackupError(f"the backup is of site {manifest.get('site_id')!r}, this "
                          f"site.yaml is site {site.id!r}")
    places = _files(site)
    plan: list[tuple[Path, Path]] = []
    for name, facts in manifest.get("files", {}).items():
        if name not in places:
            raise BackupError(f"{name}: this site.yaml has no place for it (is the NC "
                              "database still SQLite?)")
        copy, place = source / name, places[name]
        if not copy.exists() or _sha256(copy) != facts.get("sha256"):
            raise BackupError(f"{copy}: missing or changed since the backup (SHA-256)")
        with contextlib.closing(sqlite3.connect(f"file:{quote(str(copy))}?mode=ro",
                                                uri=True)) as db:
            check = db.execute("PRAGMA integrity_check").fetchone()[0]
        if check != "ok":
            raise BackupError(f"{copy}: SQLite's integrity check says {check}")
        if place.exists():
            if not force:
                raise BackupError(f"{place} exists: stop patrol and restore with --force "
                                  "to replace it")
            pid = _open_by_a_process(place)
            if pid is not None:
                raise BackupError(f"{place} is open in process {pid}: stop patrol first")
        plan.append((copy, place))
    lines = []
    for copy, place in plan:
        place.parent.mkdir(parents=True, exist_ok=True)
        incoming = place.with_name(place.name + ".restoring")
        shutil.copyfile(copy, incoming)
        for suffix in ("-wal", "-shm", "-journal"):
            Path(f"{place}{suffix}").unlink(missing_ok=True)
        os.replace(incoming, place)
        lines.append(f"{copy.name}: restored to {place}")
    lines.append(f"restored the backup of {manifest.get('at')}; start patrol again")
    return lines
