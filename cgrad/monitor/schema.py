"""The run-file format (docs/run_format.md): DDL, version, and the open /
validate helpers the writer and the reader share.

Every failure to create or open a run file becomes a RunFileError naming
the path; no sqlite3 exception leaves this module.
"""
import json
import os
import sqlite3
import urllib.parse

__all__ = ["RunFileError", "FORMAT", "SCHEMA_VERSION", "RUN_SUFFIX", "DDL", "DDL_V1", "DDL_V2",
           "DDL_V3", "STEP_FLOAT_COLUMNS", "STEP_INT_COLUMNS", "LAYER_FIELDS", "create_run_file", "open_read_only", "read_meta", "validate_meta"]

FORMAT = "cgrad-run"
SCHEMA_VERSION = 4
# schema_version 1 stored one layer_stats row per (step, layer); version 2
# one layer_stats_v2 row per step holding each field as an array (BLOB);
# version 3 one layer_chunks row per commit holding (steps x layers)
# arrays, with per-step rows in steps and lr; version 4 one chunks row per
# commit holding everything of its steps as arrays (no per-step row at
# all: a row bound per step was most of the writer's time). All four are
# read.
RUN_SUFFIX = ".cgrun"


class RunFileError(ValueError):
    """A run file that cannot be created, opened or read (missing directory,
    read-only location, not a run file, newer schema, corrupt file)."""


# Tables every version has.
_DDL_BASE = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    time REAL NOT NULL,
    step INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE layers (
    layer_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    shape TEXT NOT NULL,
    numel INTEGER NOT NULL
);
CREATE TABLE scalars (
    scalar_id INTEGER PRIMARY KEY,
    step INTEGER NOT NULL, name TEXT NOT NULL, value REAL
);
CREATE TABLE events (
    event_id INTEGER PRIMARY KEY,
    step INTEGER NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL,
    layer_id INTEGER,
    value REAL
);
"""

# The per-step tables of versions 1-3 (one row per step, one per step and
# group).
_DDL_STEP_ROWS = """
CREATE TABLE steps (
    step INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    loss REAL,
    grad_norm REAL,
    grad_norm_clipped REAL,
    clip_max_norm REAL,
    clip_coef REAL,
    clipped INTEGER NOT NULL,
    loss_scale REAL,
    skipped INTEGER NOT NULL,
    skip_reason TEXT,
    nonfinite INTEGER NOT NULL
);
CREATE TABLE lr (
    step INTEGER NOT NULL, grp INTEGER NOT NULL, lr REAL NOT NULL,
    PRIMARY KEY (step, grp)
) WITHOUT ROWID;
"""

# The steps columns in the order RunDelta.steps has them (the version-1..3
# steps table's column order); in a version-4 chunk each is one array.
STEP_FLOAT_COLUMNS = ("time", "loss", "grad_norm", "grad_norm_clipped", "clip_max_norm",
                      "clip_coef", "loss_scale")
STEP_INT_COLUMNS = ("step", "clipped", "skipped", "nonfinite")
LAYER_FIELDS = ("grad_norm", "grad_max", "nonfinite", "weight_norm", "update_ratio")

# Version 4: one chunks row per commit (and per queued ring chunk) holding
# every column of its k steps as a little-endian array: float64[k] /
# int64[k] step columns, float64[k x groups] lr, float64/int64[k x layers]
# per-layer statistics (NULL when the chunk carries none). A loss that
# arrived after its step was written is a late_losses row.
DDL = _DDL_BASE + """
CREATE TABLE chunks (
    chunk_id INTEGER PRIMARY KEY,
    first_step INTEGER NOT NULL,
    last_step INTEGER NOT NULL,
    n_steps INTEGER NOT NULL,
    n_groups INTEGER NOT NULL,
    n_layers INTEGER NOT NULL,
    step BLOB NOT NULL,
    time BLOB NOT NULL,
    loss BLOB NOT NULL,
    grad_norm BLOB NOT NULL,
    grad_norm_clipped BLOB NOT NULL,
    clip_max_norm BLOB NOT NULL,
    clip_coef BLOB NOT NULL,
    loss_scale BLOB NOT NULL,
    clipped BLOB NOT NULL,
    skipped BLOB NOT NULL,
    nonfinite BLOB NOT NULL,
    skip_reason TEXT,
    lr BLOB NOT NULL,
    layer_grad_norm BLOB,
    layer_grad_max BLOB,
    layer_nonfinite BLOB,
    layer_weight_norm BLOB,
    layer_update_ratio BLOB
);
CREATE INDEX chunks_last_step ON chunks (last_step);
CREATE TABLE late_losses (
    update_id INTEGER PRIMARY KEY,
    step INTEGER NOT NULL,
    loss REAL,
    chunk_id INTEGER NOT NULL
);
CREATE INDEX late_losses_step ON late_losses (step);
"""

# Version 3: one row per commit (a chunk of steps), each field a
# (n_steps x n_layers) array, rows in the order of the step array; the
# steps and lr tables row by row. For tools and tests that write
# version-3 files (the reader still reads them).
DDL_V3 = _DDL_BASE + _DDL_STEP_ROWS + """
CREATE TABLE layer_chunks (
    chunk_id INTEGER PRIMARY KEY,
    first_step INTEGER NOT NULL,
    last_step INTEGER NOT NULL,
    n_steps INTEGER NOT NULL,
    n_layers INTEGER NOT NULL,
    step BLOB NOT NULL,
    grad_norm BLOB NOT NULL,
    grad_max BLOB NOT NULL,
    nonfinite BLOB NOT NULL,
    weight_norm BLOB NOT NULL,
    update_ratio BLOB NOT NULL
);
CREATE INDEX layer_chunks_last_step ON layer_chunks (last_step);
"""

# Version 2: one row per step, the layers' values as arrays in layer_id order.
DDL_V2 = _DDL_BASE + _DDL_STEP_ROWS + """
CREATE TABLE layer_stats_v2 (
    step INTEGER PRIMARY KEY,
    grad_norm BLOB NOT NULL,
    grad_max BLOB NOT NULL,
    nonfinite BLOB NOT NULL,
    weight_norm BLOB NOT NULL,
    update_ratio BLOB
);
"""

# The version-1 layout (one layer_stats row per step and layer), which the
# reader still reads; for tools and tests that write version-1 files.
DDL_V1 = _DDL_BASE + _DDL_STEP_ROWS + """
CREATE TABLE layer_stats (
    step INTEGER NOT NULL, layer_id INTEGER NOT NULL,
    grad_norm REAL NOT NULL,
    grad_max REAL NOT NULL,
    nonfinite INTEGER NOT NULL,
    weight_norm REAL NOT NULL,
    update_ratio REAL,
    PRIMARY KEY (step, layer_id)
) WITHOUT ROWID;
"""

# Tables a reader needs; a file missing one of them is not a run file.
_BASE_TABLES = ("meta", "heartbeat", "layers", "scalars", "events")
_ROW_TABLES = _BASE_TABLES + ("steps", "lr")
REQUIRED_TABLES = {1: _ROW_TABLES + ("layer_stats",), 2: _ROW_TABLES + ("layer_stats_v2",),
                   3: _ROW_TABLES + ("layer_chunks",), 4: _BASE_TABLES + ("chunks", "late_losses")}


def _connect_error(path, exc, doing):
    msg = str(exc)
    if "not a database" in msg or "malformed" in msg or "encrypted" in msg:
        return RunFileError(f"{path!s}: not a cgrad run file or corrupt ({msg})")
    if "readonly" in msg or "read-only" in msg or "unable to open" in msg:
        return RunFileError(f"{path!s}: cannot {doing} (read-only location or missing "
                            f"permission: {msg})")
    return RunFileError(f"{path!s}: cannot {doing} ({type(exc).__name__}: {msg})")


def create_run_file(path, meta):
    """Creates a new run file at path (which must not exist; its directory
    must) with the schema and the meta rows, in WAL mode. Returns the open
    writable connection (autocommit; the caller opens its own transactions).
    The file is created with O_EXCL first so a concurrent creator or an
    unwritable directory gives an OSError with the real reason."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise RunFileError(f"{path}: directory {directory!r} does not exist")
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        os.close(fd)
    except FileExistsError:
        raise RunFileError(f"{path}: a file already exists there") from None
    except OSError as e:
        raise RunFileError(f"{path}: cannot create a run file here ({e.strerror}; "
                           f"read-only location?)") from None
    con = None
    try:
        con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise RunFileError(f"{path}: the file system does not support WAL mode "
                               f"(journal_mode is {mode!r}); use a local disk")
        con.execute("PRAGMA synchronous=NORMAL")
        con.execute("BEGIN")
        for stmt in DDL.split(";"):
            if stmt.strip():
                con.execute(stmt)
        rows = [("format", FORMAT), ("schema_version", str(SCHEMA_VERSION))]
        rows += [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()]
        con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", rows)
        con.execute("INSERT INTO heartbeat (id, time, step, state) VALUES (1, ?, -1, 'running')",
                    (float(meta.get("created", 0.0)),))
        con.execute("COMMIT")
        return con
    except (sqlite3.Error, RunFileError) as e:
        if con is not None:
            con.close()
        for suffix in ("", "-wal", "-shm"):  # no half-made run file left behind
            try:
                os.remove(path + suffix)
            except OSError:
                pass
        if isinstance(e, RunFileError):
            raise
        raise _connect_error(path, e, "create a run file") from None


def _ro_uri(path, immutable=False):
    quoted = urllib.parse.quote(os.path.abspath(path))
    return f"file:{quoted}?mode=ro" + ("&immutable=1" if immutable else "")


def open_read_only(path):
    """A read-only autocommit connection to an existing run file, validated
    (see validate_meta). Returns (connection, meta dict)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise RunFileError(f"{path}: no such run file")
    if os.path.isdir(path):
        raise RunFileError(f"{path}: is a directory, not a run file "
                           f"(cgrad.monitor.list_runs lists the runs in it)")
    con = None
    try:
        con = sqlite3.connect(_ro_uri(path), uri=True, isolation_level=None,
                              check_same_thread=False)
        try:
            meta = read_meta(con, path)
        except sqlite3.OperationalError as e:
            if "unable to open" not in str(e):
                raise
            # A WAL file with no -shm beside it in a directory we cannot write
            # (a finished run copied somewhere read-only): nothing writes it.
            con.close()
            con = sqlite3.connect(_ro_uri(path, immutable=True), uri=True, isolation_level=None,
                                  check_same_thread=False)
            meta = read_meta(con, path)
        return con, meta
    except RunFileError:
        if con is not None:
            con.close()
        raise
    except sqlite3.Error as e:
        if con is not None:
            con.close()
        raise _connect_error(path, e, "open the run file") from None


def read_meta(con, path):
    """meta as a dict (config decoded from JSON), validated."""
    have = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if "meta" not in have:
        raise RunFileError(f"{path}: not a cgrad run file (no meta table)")
    meta = dict(con.execute("SELECT key, value FROM meta").fetchall())
    validate_meta(meta, path)
    missing = [t for t in REQUIRED_TABLES[int(meta["schema_version"])] if t not in have]
    if missing:
        raise RunFileError(f"{path}: not a complete cgrad run file (missing tables {missing})")
    try:
        meta["config"] = json.loads(meta.get("config", "{}"))
    except ValueError:
        raise RunFileError(f"{path}: meta 'config' is not valid JSON") from None
    for key in ("schema_version", "pid", "n_groups"):
        if key in meta:
            try:
                meta[key] = int(meta[key])
            except ValueError:
                raise RunFileError(f"{path}: meta {key!r} is not an integer: {meta[key]!r}") from None
    if "created" in meta:
        try:
            meta["created"] = float(meta["created"])
        except ValueError:
            raise RunFileError(f"{path}: meta 'created' is not a number: {meta['created']!r}") from None
    return meta


def validate_meta(meta, path):
    """Raises RunFileError unless meta says this is a run file this cgrad
    can read."""
    if meta.get("format") != FORMAT:
        raise RunFileError(f"{path}: not a cgrad run file (meta format is "
                           f"{meta.get('format')!r}, expected {FORMAT!r})")
    try:
        version = int(meta.get("schema_version", ""))
    except ValueError:
        raise RunFileError(f"{path}: invalid schema_version {meta.get('schema_version')!r}") from None
    if version > SCHEMA_VERSION:
        raise RunFileError(f"{path}: run file has schema version {version}, newer than this "
                           f"cgrad reads ({SCHEMA_VERSION}); it needs a newer cgrad")
    if version < 1:
        raise RunFileError(f"{path}: invalid schema_version {version}")
