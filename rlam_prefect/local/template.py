"""A migrated Prefect database per installed Prefect version, copied into each new home.

Creating and migrating a fresh SQLite database is most of a new home's server start-up (about
9 of 14 s here): Prefect runs its 100-odd Alembic migrations one by one. The result depends only
on the installed Prefect (its version and its migration head), so it is built once per user, with
Prefect's own ``prefect server database upgrade``, in a cache directory (``RLAM_CACHE_DIR``, else
``$XDG_CACHE_HOME/rlam-prefect``, else ``~/.cache/rlam-prefect``), and a new home gets a copy.
The first home on a machine (no template yet) migrates its own database, as Prefect does, while the
template is built in the background at the lowest CPU priority for the homes after it.

A template is used only after it is checked: its recorded key matches the installed Prefect, its
bytes match the digest recorded when it was built, SQLite's quick check passes and its
``alembic_version`` is the head read from Prefect's own migration files. Anything else is said on
stderr and the template is rebuilt; a wrong one is never used. The server still runs Prefect's
migrate-on-start, which finds nothing to do. Only the default database (SQLite in the home) is
seeded: with a database URL set in the environment nothing is copied.

The template also holds Prefect's block types, registered when it is built as a server registers them
at start-up (about 1.5 s of a new server's 5.5 s here: it imports every installed collection). A seeded
home records which Prefect and collections registered them (``blocks.json``); while the installed ones
are among them, its server is told not to register again (``block_settings``). Anything else, and the
server registers them as Prefect always does.

Cheap to import and free of Prefect imports: it runs in the client before Prefect is configured.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlam_prefect.core.errors import RLamError
from rlam_prefect.core.filelock import exclusive
from rlam_prefect.core.files import file_digest, write_json

CACHE_ENV = "RLAM_CACHE_DIR"
DB_NAME = "prefect.db"
META_NAME = "template.json"
BLOCKS_NAME = "blocks.json"  # in a seeded home's Prefect folder: who registered its block types
# what a server is told when its database's block types were registered by the installed Prefect and collections
SKIP_BLOCK_REGISTRATION = {"PREFECT_SERVER_REGISTER_BLOCKS_ON_START": "false", "PREFECT_SERVER_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false"}
BUILD_TIMEOUT_S = 300.0
SHIPPED = Path(__file__).with_name("templates")  # prefect-<version>-<head>.db.gz: the first home on a machine migrates nothing
# settings that move Prefect's database away from $PREFECT_HOME/prefect.db: then there is nothing to seed
_DATABASE_SETTINGS = tuple(
    f"PREFECT_{scope}_DATABASE_{name}" for scope in ("API", "SERVER") for name in ("CONNECTION_URL", "DRIVER", "NAME", "HOST")
)
_REVISION = re.compile(r"^(down_revision|revision)\s*=\s*(.+)$", re.MULTILINE)


NO_BLOCKS = "built without Prefect's block types"  # by an earlier rlam: usable, but its homes register them at start


class TemplateError(RLamError):
    exit_code = 6


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    env = os.environ if environ is None else environ
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV]).expanduser()
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "rlam-prefect"


def uses_default_database(environ: Mapping[str, str]) -> bool:
    return not any(environ.get(name) for name in _DATABASE_SETTINGS)


def installed_key() -> tuple[str, str]:
    """(Prefect's version, its SQLite migration head), read from the installed files without importing Prefect."""
    spec = importlib.util.find_spec("prefect")
    if spec is None or not spec.submodule_search_locations:
        raise TemplateError("Prefect is not installed")
    versions = Path(list(spec.submodule_search_locations)[0]) / "server" / "database" / "_migrations" / "versions" / "sqlite"
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in versions.glob("*.py"):
        for name, value in _REVISION.findall(path.read_text()):
            ids = set(re.findall(r"[\"']([0-9a-f]+)[\"']", value))
            (revisions if name == "revision" else parents).update(ids)
    heads = sorted(revisions - parents)
    if len(heads) != 1:
        raise TemplateError(f"cannot tell Prefect's migration head from {versions}: {heads or 'none'}")
    return importlib.metadata.version("prefect"), heads[0]


def installed_collections() -> list[str]:
    """The installed Prefect collections (``prefect.collections`` entry points), as ``name==version``: their
    block types are registered with Prefect's at server start-up."""
    found = {f"{ep.dist.name}=={ep.dist.version}" for ep in importlib.metadata.entry_points(group="prefect.collections") if ep.dist}
    return sorted(found)


def blocks_record() -> dict[str, Any]:
    return {"prefect": importlib.metadata.version("prefect"), "collections": installed_collections()}


def block_settings(prefect_home: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Settings that spare a seeded home's server registering block types the template already holds; else none."""
    if not uses_default_database(environ):
        return {}  # the server's database is elsewhere: the record speaks of the home's SQLite file
    try:
        record = json.loads((prefect_home / BLOCKS_NAME).read_text())
    except (OSError, ValueError):
        return {}
    installed = blocks_record()
    if record.get("prefect") != installed["prefect"] or not set(installed["collections"]) <= set(record.get("collections", ())):
        return {}  # a newer Prefect or a new collection: the server registers, as Prefect always does
    return dict(SKIP_BLOCK_REGISTRATION)


def seed_home(prefect_home: Path, environ: Mapping[str, str]) -> bool:
    """Copy a checked template into a home that has no database yet; False when there is nothing to copy.

    Without a usable template the home's server migrates its own database as Prefect always does, and
    the template is built beside it in a background process at the lowest CPU priority (``build_in_background``):
    building it first would make the very first command wait for two migrations' worth of imports."""
    target = prefect_home / DB_NAME
    if target.exists():
        return False
    (prefect_home / BLOCKS_NAME).unlink(missing_ok=True)  # it spoke of a database that is gone
    if not uses_default_database(environ):
        return False
    version, head = installed_key()
    folder = template_folder(environ, version, head)
    problem = check_template(folder, version, head)
    if problem in ("missing", NO_BLOCKS) and shipped_template(version, head) is not None:
        ensure_template(environ)  # the copy shipped in the package: checked as a built one is, milliseconds
        problem = check_template(folder, version, head)
    if problem == NO_BLOCKS:  # its migrations are right: this home's server registers the block types itself
        build_in_background(environ)  # for the homes after it (unless a build is already under way)
        problem = None
    if problem is not None:
        if build_in_background(environ) and problem != "missing":
            print(f"rlam: the Prefect database template in {folder} is unusable ({problem}); rebuilding it in the background", file=sys.stderr)
        return False
    template = folder / DB_NAME
    prefect_home.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".prefect-db-", dir=prefect_home)
    os.close(fd)
    try:
        _copy_database(template, Path(tmp))
        os.replace(tmp, target)  # complete or absent: a server never sees half a copy
    finally:
        Path(tmp).unlink(missing_ok=True)
    blocks = json.loads((folder / META_NAME).read_text()).get("blocks")
    if blocks:
        write_json(prefect_home / BLOCKS_NAME, blocks)
    return True


def ensure_template(environ: Mapping[str, str]) -> Path:
    """The checked template for the installed Prefect, built under a lock if missing, stale or damaged."""
    version, head = installed_key()
    folder = template_folder(environ, version, head)
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive(folder / "build.lock"):
        problem = check_template(folder, version, head)
        if problem is None:
            return folder / DB_NAME
        if problem == NO_BLOCKS:
            print(f"rlam: updating the Prefect database template in {folder} ({problem})", file=sys.stderr)
        elif problem != "missing":
            print(f"rlam: the Prefect database template in {folder} is unusable ({problem}); rebuilding it", file=sys.stderr)
        shipped = shipped_template(version, head) if problem in ("missing", NO_BLOCKS) else None
        if shipped is None or not _unpack(shipped, folder, version, head):
            _build(folder, version, head, environ)
        problem = check_template(folder, version, head)
        if problem is not None:
            raise TemplateError(f"the Prefect database template just built in {folder} fails its check: {problem}")
        return folder / DB_NAME


def shipped_template(version: str, head: str) -> Path | None:
    """The template shipped in this package for this Prefect, if any (``python -m rlam_prefect.local.template --ship``)."""
    path = _shipped_path(version, head)
    return path if path.exists() else None


def _shipped_path(version: str, head: str) -> Path:
    return SHIPPED / f"prefect-{version}-{head}.db.gz"


def _shipped_blocks_path(shipped: Path) -> Path:
    return shipped.with_name(shipped.name.removesuffix(".db.gz") + ".blocks.json")  # who registered its block types


def _unpack(shipped: Path, folder: Path, version: str, head: str) -> bool:
    """Install the shipped template into ``folder`` (the caller holds the build lock); False, said on stderr, if it fails its check."""
    with tempfile.TemporaryDirectory(prefix="unpack-", dir=folder) as scratch:
        db = Path(scratch) / DB_NAME
        with gzip.open(shipped, "rb") as source, open(db, "wb") as target:
            shutil.copyfileobj(source, target)
        problem = _check_database(db, head)
        if problem is not None:
            print(f"rlam: the Prefect database template shipped in {shipped} fails its check ({problem}); building one", file=sys.stderr)
            return False
        origin: dict[str, object] = {"source": shipped.name}
        with contextlib.suppress(FileNotFoundError):
            origin["blocks"] = json.loads(_shipped_blocks_path(shipped).read_text())
        _install(db, folder, version, head, origin)
    return True


def template_folder(environ: Mapping[str, str], version: str, head: str) -> Path:
    return cache_dir(environ) / "prefect-db" / f"{version}-{head}"


def build_in_background(environ: Mapping[str, str]) -> bool:
    """``python -m rlam_prefect.local.template`` detached, at nice 19 (output in ``build.log``); False if one is under way."""
    version, head = installed_key()
    folder = template_folder(environ, version, head)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "build.lock", "a+b") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    with open(folder / "build.log", "ab") as log:
        subprocess.Popen([sys.executable, "-m", "rlam_prefect.local.template"], env=dict(environ), stdin=subprocess.DEVNULL,
                         stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return True


def check_template(folder: Path, version: str, head: str) -> str | None:
    """None when the template in ``folder`` is the migrated database of this Prefect; else what is wrong."""
    db, meta_path = folder / DB_NAME, folder / META_NAME
    if not db.exists() and not meta_path.exists():
        return "missing"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        return f"no readable {META_NAME}: {exc}"
    if (meta.get("prefect_version"), meta.get("migration_head")) != (version, head):
        return f"built for Prefect {meta.get('prefect_version')} at {meta.get('migration_head')}, installed {version} at {head}"
    try:
        digest = file_digest(db).digest
    except OSError as exc:
        return f"cannot read {db.name}: {exc}"
    if digest != meta.get("sha256"):
        return "its bytes changed since it was built"
    return _check_database(db, head) or (None if meta.get("blocks") else NO_BLOCKS)


def _check_database(db: Path, head: str) -> str | None:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            quick = con.execute("PRAGMA quick_check").fetchone()[0]
            if quick != "ok":
                return f"SQLite quick check: {quick}"
            rows = [r[0] for r in con.execute("SELECT version_num FROM alembic_version")]
    except sqlite3.Error as exc:
        return f"not a readable Prefect database: {exc}"
    if rows != [head]:
        return f"migrated to {rows}, expected [{head!r}]"
    return None


def _build(folder: Path, version: str, head: str, environ: Mapping[str, str]) -> None:
    """Prefect's own `prefect server database upgrade` in a scratch PREFECT_HOME, then moved into place."""
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="build-", dir=folder) as scratch:
        env = {k: v for k, v in environ.items() if not k.startswith("PREFECT_")}
        env.update(PREFECT_HOME=scratch, PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", PREFECT_LOGGING_LEVEL="WARNING")
        done = _run_build_step([sys.executable, "-m", "prefect", "server", "database", "upgrade", "-y"], env)
        built = Path(scratch) / DB_NAME
        _check_step(done, built, "`prefect server database upgrade`")
        blocks = blocks_record()  # read before registering: a collection installed meanwhile is not claimed
        done = _run_build_step([sys.executable, "-m", "rlam_prefect.local.prefect_server", "--register-blocks"], env)
        _check_step(done, built, "registering Prefect's block types")
        with contextlib.closing(sqlite3.connect(built)) as con:
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            con.execute("PRAGMA journal_mode=DELETE")  # one self-contained file; Prefect turns WAL on when it connects
        problem = _check_database(built, head)
        if problem is not None:
            raise TemplateError(f"the database Prefect just migrated fails its check: {problem}")
        _install(built, folder, version, head, {"build_s": round(time.monotonic() - started, 2), "blocks": blocks})


def _run_build_step(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise TemplateError(f"building the Prefect database template took over {BUILD_TIMEOUT_S:.0f} s: {' '.join(command[1:])}") from exc


def _check_step(done: subprocess.CompletedProcess[str], built: Path, what: str) -> None:
    if done.returncode != 0 or not built.exists():
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise TemplateError(f"{what} failed building the database template: {tail[0]}")


def _install(db: Path, folder: Path, version: str, head: str, origin: dict[str, object]) -> None:
    """Move a checked database into ``folder`` with its record (version, head, digest, where it came from); ``db`` is in a scratch directory of it."""
    record = {"prefect_version": version, "migration_head": head, **origin, "sha256": file_digest(db).digest, "built_at": time.time()}
    (folder / META_NAME).unlink(missing_ok=True)  # never a new database beside an old record, nor the reverse
    os.replace(db, folder / DB_NAME)
    write_json(folder / META_NAME, record)


def _copy_database(source: Path, target: Path) -> None:
    with contextlib.closing(sqlite3.connect(f"file:{source}?mode=ro", uri=True)) as src, contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)





def ship(environ: Mapping[str, str]) -> Path:
    """For maintainers, after changing the Prefect pin: build a template with Prefect's migrations and ship it, gzipped."""
    version, head = installed_key()
    with tempfile.TemporaryDirectory() as folder:
        _build(Path(folder), version, head, environ)  # never from the template shipped before
        built = Path(folder) / DB_NAME
        SHIPPED.mkdir(exist_ok=True)
        target = _shipped_path(version, head)
        with open(built, "rb") as source, gzip.GzipFile(target, "wb", compresslevel=9, mtime=0) as packed:
            shutil.copyfileobj(source, packed)
        blocks = json.loads((Path(folder) / META_NAME).read_text())["blocks"]
        _shipped_blocks_path(target).write_text(json.dumps(blocks, indent=1) + "\n")
    return target


if __name__ == "__main__":  # the background build (build_in_background): lowest priority, then Prefect's migrations
    if sys.argv[1:] == ["--ship"]:
        print(f"rlam: shipped {ship(os.environ)}", flush=True)
        sys.exit(0)
    os.nice(19)
    built = ensure_template(os.environ)
    print(f"rlam: Prefect database template ready at {built}", flush=True)
