"""Every SQL statement of the SQLite adapter, as named templates.

Placeholders in braces are identifiers only, and only ones that passed
``repos.shards.check_identifier``: ``{table}`` is a shard's table, ``{id}`` and ``{at}`` the
entity's id and sharding-time columns. Values are always bound, in one of two ways (sqlite3
binds a statement either by name or by position):

- ``:name`` parameters, from a dict. A parameter that may be NULL
  (``(:x IS NULL OR col = :x)``) narrows nothing when it is.
- in statements listing rows or ids (``{rows}``: :func:`rows` marks, ``{keys}``: :func:`marks`),
  by position, from a tuple: numbered parameters ``?1``, ``?2`` for the values ahead of the
  list, then one ``?`` per listed value, which SQLite numbers on from there.
"""

from __future__ import annotations

#: Bound parameters per statement: SQLite's default limit, whatever the build allows.
MAX_VARIABLES = 32_766
BUSY_TIMEOUT_MS = 10_000

PRAGMAS = (
    "PRAGMA auto_vacuum = INCREMENTAL",  # only takes effect on a new file: set before any table
    "PRAGMA journal_mode = WAL",
    "PRAGMA synchronous = NORMAL",  # durable across process crashes; WAL keeps it consistent
    f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}",
)
# Writes take the database lock up front: readers turned writers never deadlock, and two
# claimers on one file serialise (SQLite's FOR UPDATE SKIP LOCKED, for a single writer).
BEGIN = "BEGIN IMMEDIATE"
COMMIT = "COMMIT"
ROLLBACK = "ROLLBACK"

_COLUMNS = """
    "{at}" INTEGER NOT NULL,
    payload BLOB NOT NULL,
    status INTEGER NOT NULL,
    due_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    claim_epoch INTEGER NOT NULL DEFAULT 0,
    claimed_by TEXT,
    claimed_at INTEGER,
    fired_at INTEGER,
    last_error TEXT,
    priority INTEGER NOT NULL DEFAULT 500,
    category TEXT NOT NULL DEFAULT ''
)"""
#: By the entity's key type: an int id is the rowid itself; a table keyed by text ids is
#: stored in id order (WITHOUT ROWID) rather than beside a rowid index.
_CREATE_SHARD = 'CREATE TABLE IF NOT EXISTS "{table}" (\n    "{id}" '
CREATE_SHARD = {
    int: _CREATE_SHARD + "INTEGER PRIMARY KEY NOT NULL," + _COLUMNS,
    str: _CREATE_SHARD + "TEXT PRIMARY KEY NOT NULL," + _COLUMNS + " WITHOUT ROWID",
}
# The claim index, as in MySQL (repos/mysql/sql.py): PENDING rows are its (0, due_at) range;
# priority last, so that a ranked claim's step 1 reads the index alone (a covering index: the
# rowid, or a WITHOUT ROWID table's key, is in every entry).
CREATE_CLAIM_INDEX = (
    'CREATE INDEX IF NOT EXISTS "ix_{table}_claim" ON "{table}" (claim_epoch, due_at, priority)'
)
LIST_TABLES = (
    "SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE :pattern ESCAPE '\\'"
)
DROP_TABLE = 'DROP TABLE IF EXISTS "{table}"'
# A script, not execute(): the pragma frees one page per step and execute() steps only once.
RECLAIM = "PRAGMA incremental_vacuum; PRAGMA wal_checkpoint(TRUNCATE);"

INSERT = (
    'INSERT INTO "{table}" ("{id}", "{at}", payload, status, due_at, attempts, claim_epoch,'
    " claimed_by, claimed_at, priority, category) VALUES {rows}"
)
INSERT_IGNORE = INSERT + ' ON CONFLICT ("{id}") DO NOTHING'
#: Values in one row of INSERT's {rows}.
INSERT_WIDTH = 11
EXISTING_IDS = 'SELECT "{id}", status FROM "{table}" WHERE "{id}" IN ({keys})'

# PENDING rows are the claim index's (0, due_at) range; status = 0 only filters out a row of a
# status this version does not know. The payload only for rows due before payload_before_ms:
# the rest are read when nearly due.
CLAIM_SELECT = """
SELECT "{id}", "{at}", due_at, attempts, CASE WHEN due_at < :payload_before_ms THEN payload END,
    priority, category
FROM "{table}" WHERE claim_epoch = 0 AND due_at < :before_ms AND status = 0
ORDER BY due_at LIMIT :limit"""
# The claim of a backlog (claim_due(boost_per_minute=...)), in repos/ranked.py's two steps, in
# the claim's one write transaction. Step 1 along the claim index: the due time that bounds the
# window (the nth-oldest due unclaimed row), then the oldest rows due before :scan_before_ms,
# ranked (repos/options.py's rank(); the adapter merges the shards by the same).
# Both from the claim index alone: no status = 0 (status is in no index; every known status but
# PENDING is out of the (0, due_at) range, and step 2 checks it again).
RANKED_NTH = """
SELECT due_at FROM "{table}" WHERE claim_epoch = 0 AND due_at < :before_ms
ORDER BY due_at LIMIT 1 OFFSET :nth"""
RANKED_SCAN = """
SELECT "{id}", due_at, priority FROM (
    SELECT "{id}", due_at, priority FROM "{table}"
    WHERE claim_epoch = 0 AND due_at < :scan_before_ms
    ORDER BY due_at LIMIT :scan_rows)
ORDER BY due_at * :boost_per_ms - priority, due_at LIMIT :pick_rows"""
# Step 2: the ids picked, read as a claim reads them (nothing else writes meanwhile).
RANKED_TAKE = """
SELECT "{id}", "{at}", due_at, attempts, CASE WHEN due_at < ?1 THEN payload END, priority, category
FROM "{table}" WHERE claim_epoch = 0 AND due_at < ?2 AND status = 0 AND "{id}" IN ({keys})"""
CLAIM_UPDATE = """
UPDATE "{table}" SET status = 1, claim_epoch = ?1, claimed_by = ?2, claimed_at = ?3,
    attempts = attempts + 1
WHERE "{id}" IN ({keys})"""
# Every write about a claim is conditional on the claim's epoch (?1 / :epoch).
READ_PAYLOADS = """
SELECT "{id}", "{at}", payload FROM "{table}"
WHERE claim_epoch = ?1 AND status = 1 AND "{id}" IN ({keys})"""
MARK_DONE = """
UPDATE "{table}" SET status = 2, fired_at = ?2
WHERE claim_epoch = ?1 AND status = 1 AND "{id}" IN ({keys})"""
# A retry makes the row PENDING again (new_epoch 0); a last failure keeps the epoch.
MARK_FAILED = """
UPDATE "{table}" SET status = :status, claim_epoch = :new_epoch,
    due_at = COALESCE(:retry_at_ms, due_at), last_error = :error,
    fired_at = COALESCE(:fired_at_ms, fired_at), attempts = attempts - :handed_back
WHERE claim_epoch = :epoch AND status = 1 AND "{id}" = :key"""
# Back to PENDING, the claim's attempt handed back: the next claim gives the same attempt.
_RELEASE = """
UPDATE "{table}" SET status = 0, claim_epoch = 0, claimed_by = NULL, claimed_at = NULL,
    attempts = MAX(attempts - 1, 0)
WHERE """
RELEASE = _RELEASE + 'claim_epoch = ?1 AND status = 1 AND "{id}" IN ({keys})'
# The epoch's range of the claim index from from_ms on (to before_ms, if given); of one
# claim, if claimed_at_ms.
TAKE_OVER = (
    _RELEASE + "claim_epoch = :epoch AND due_at >= :from_ms AND status = 1"
    " AND (:before_ms IS NULL OR due_at < :before_ms)"
    " AND (:claimed_at_ms IS NULL OR claimed_at = :claimed_at_ms)"
)
# Every claimed epoch below :epoch but those kept (:keep, a JSON array of ints).
TAKE_OVER_EARLIER = (
    _RELEASE
    + "claim_epoch > 0 AND claim_epoch < :epoch"
    + " AND claim_epoch NOT IN (SELECT value FROM json_each(:keep))"
    + " AND due_at >= :from_ms AND status = 1"
)
# Assignments see the row as it was: a PENDING row leaves the PENDING range (-1); a WAITING
# one is out of it already (-2).
CANCEL = """
UPDATE "{table}" SET status = 4, claim_epoch = CASE WHEN status = 0 THEN -1 ELSE claim_epoch END
WHERE status IN (0, 1, 6) AND "{id}" IN ({keys})"""

# -- dependencies (repos/dependencies.py) ------------------------------------------------------
# The rows of some ids and their status, by primary key: what a dependency named by id stands
# for, and how far it got.
LOCATE = 'SELECT "{id}", "{at}", status FROM "{table}" WHERE "{id}" IN ({keys})'
# A WAITING row (6) whose dependencies are done: PENDING, into the claim index's PENDING range.
WAKE = """
UPDATE "{table}" SET status = 0, claim_epoch = 0 WHERE status = 6 AND "{id}" IN ({keys})"""
# One whose must-succeed dependency did not: its failure, without a fire (fired_at unset).
FAIL_WAITING = """
UPDATE "{table}" SET status = :status, last_error = :error WHERE status = 6 AND "{id}" = :key"""

_ROW_COLUMNS = (
    '"{id}", "{at}", status, due_at, attempts, claimed_by, claimed_at, fired_at, last_error,'
    " payload, claim_epoch, priority, category"
)
# The rows named that another epoch than the caller's (?1) holds now.
FENCED = "SELECT " + _ROW_COLUMNS + ' FROM "{table}" WHERE claim_epoch <> ?1 AND "{id}" IN ({keys})'
GET = "SELECT " + _ROW_COLUMNS + ' FROM "{table}" WHERE "{id}" = :key'
# Keyset pagination: rows after (after_at_ms, after_key), if given; of one status, if given
# (a filter: status is in no index).
PAGE = (
    "SELECT " + _ROW_COLUMNS + ' FROM "{table}"'
    ' WHERE "{at}" >= :start_ms AND "{at}" < :end_ms'
    " AND (:status IS NULL OR status = :status)"
    ' AND (:after_at_ms IS NULL OR "{at}" > :after_at_ms'
    ' OR ("{at}" = :after_at_ms AND "{id}" > :after_key))'
    ' ORDER BY "{at}", "{id}" LIMIT :limit'
)


# -- job control (repos/control.py) ----------------------------------------------------------
# One shard's rows matching a JobQuery, after the cursor, in (sharding time, id) order; each
# test narrows nothing when its parameter is NULL (:statuses: a JSON array of ints, or NULL).
def _find(cmp: str, order: str) -> str:
    """FIND in one direction: rows after the cursor, `cmp` (> or <), in `order` (ASC, DESC)."""
    return (
        "SELECT " + _ROW_COLUMNS + ' FROM "{table}"'
        ' WHERE (:from_ms IS NULL OR "{at}" >= :from_ms) AND (:before_ms IS NULL OR "{at}" < :before_ms)'
        " AND (:statuses IS NULL OR status IN (SELECT value FROM json_each(:statuses)))"
        " AND (:category IS NULL OR category = :category)"
        ' AND (:key_from IS NULL OR "{id}" >= :key_from)'
        ' AND (:key_before IS NULL OR "{id}" < :key_before)'
        ' AND (:after_at_ms IS NULL OR "{at}" ' + cmp + " :after_at_ms"
        ' OR ("{at}" = :after_at_ms AND "{id}" ' + cmp + " :after_key))"
        ' ORDER BY "{at}" ' + order + ', "{id}" ' + order + " LIMIT :limit"
    )


FIND = _find(">", "ASC")
FIND_DESC = _find("<", "DESC")
# Rows still in the state the caller saw (?5 status, ?6 claim_epoch) to another; ?4 set: the
# claim is cleared and its attempt handed back (a claimed row paused).
TRANSITION = """
UPDATE "{table}" SET status = ?1, claim_epoch = ?2, due_at = COALESCE(?3, due_at),
    claimed_by = CASE WHEN ?4 THEN NULL ELSE claimed_by END,
    claimed_at = CASE WHEN ?4 THEN NULL ELSE claimed_at END,
    attempts = CASE WHEN ?4 THEN MAX(attempts - 1, 0) ELSE attempts END
WHERE status = ?5 AND claim_epoch = ?6 AND "{id}" IN ({keys})"""
_STILL_SEEN = ' WHERE "{id}" = :key AND status = :status AND claim_epoch = :epoch'
# A row to another time: copied into the target shard, deleted from its own (one transaction);
# in place when the shard is the same.
MOVE_COPY = (
    'INSERT INTO "{target}" ("{id}", "{at}", payload, status, due_at, attempts, claim_epoch,'
    " claimed_by, claimed_at, fired_at, last_error, priority, category)"
    ' SELECT "{id}", :at_ms, payload, status, :due_ms, attempts, claim_epoch, claimed_by,'
    ' claimed_at, fired_at, last_error, priority, category FROM "{table}"' + _STILL_SEEN
)
MOVE_DELETE = 'DELETE FROM "{table}"' + _STILL_SEEN
MOVE_IN_PLACE = 'UPDATE "{table}" SET "{at}" = :at_ms, due_at = :due_ms' + _STILL_SEEN
STILL_SEEN = 'SELECT 1 FROM "{table}"' + _STILL_SEEN
ID_STORED = 'SELECT status FROM "{table}" WHERE "{id}" = :key'
# The edges of jobs waiting for the moved row follow it (as on MySQL).
MOVE_DEPENDENTS = (
    "UPDATE dependencies SET on_at = :at_ms, check_at = 0"
    " WHERE on_entity = :entity AND on_id = :on_id AND on_at = :seen_at_ms"
)
CREATE_REVOCATIONS = """CREATE TABLE IF NOT EXISTS revocations (
    epoch INTEGER NOT NULL,
    entity TEXT NOT NULL,
    job_id TEXT NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (epoch, entity, job_id, at_ms)
) WITHOUT ROWID"""
REVOKE = (
    "INSERT INTO revocations (epoch, entity, job_id, at_ms) VALUES (:epoch, :entity, :job_id,"
    " :at_ms) ON CONFLICT DO NOTHING"
)
REVOCATIONS = "SELECT epoch, entity, job_id, at_ms FROM revocations WHERE epoch = :epoch"
FORGET_REVOCATIONS = "DELETE FROM revocations WHERE epoch = :epoch"
# Revocations no running epoch will take (as on MySQL).
PRUNE_REVOCATIONS = (
    "DELETE FROM revocations WHERE epoch NOT IN (SELECT epoch FROM nodes WHERE state IN (0, 1))"
)

# A scan of the shard (status is in no index): for the shards CLI and shards about to drop.
COUNT = 'SELECT status, COUNT(*) FROM "{table}" GROUP BY status'
# Status outside STATUS_RANGE: every row (a scan), or only the rows waiting to be claimed due
# before due_before_ms (the claim index's PENDING range); the count is of them all.
UNKNOWN_STATUS = """
SELECT "{id}", status, COUNT(*) OVER () FROM "{table}" WHERE status < :first OR status > :last
ORDER BY "{id}" LIMIT :limit"""
UNKNOWN_STATUS_DUE = """
SELECT "{id}", status, COUNT(*) OVER () FROM "{table}"
WHERE claim_epoch = 0 AND due_at < :due_before_ms AND (status < :first OR status > :last)
ORDER BY "{id}" LIMIT :limit"""

# Tables made by the version before epoch claims (no claim_epoch, index ix_{table}_due on
# (status, due_at)), brought to this shape in one transaction when the store is opened: the
# rows it left CLAIMED back to PENDING (attempt handed back), finished rows out of the PENDING
# range (-1: no epoch), then the index.
TABLE_COLUMNS = "SELECT name FROM pragma_table_info(:table)"
UPGRADE_ADD_EPOCH = 'ALTER TABLE "{table}" ADD COLUMN claim_epoch INTEGER NOT NULL DEFAULT 0'
UPGRADE_RELEASE = _RELEASE + "status = 1"
UPGRADE_FINISHED = 'UPDATE "{table}" SET claim_epoch = -1 WHERE status <> 0'
DROP_OLD_INDEX = 'DROP INDEX IF EXISTS "ix_{table}_due"'
# Tables made before priorities and categories: both columns, with their defaults.
UPGRADE_ADD_PRIORITY = (
    'ALTER TABLE "{table}" ADD COLUMN priority INTEGER NOT NULL DEFAULT 500',
    "ALTER TABLE \"{table}\" ADD COLUMN category TEXT NOT NULL DEFAULT ''",
)
# Tables made before the claim index had priority (repos/mysql/upgrade.py says why rebuilt):
# the claim index's columns, then the index made again.
CLAIM_INDEX_COLUMNS = "SELECT name FROM pragma_index_info(:index)"
DROP_CLAIM_INDEX = 'DROP INDEX IF EXISTS "ix_{table}_claim"'


# -- membership (repos/sqlite/cluster.py): the nodes table, beside the shards -----------------
# SQLite serves one machine: its clock is the local one, read inside each statement as the
# MySQL statements read the server's. AUTOINCREMENT: an epoch is never handed out twice.
_NOW_MS = "CAST(ROUND((julianday('now') - 2440587.5) * 86400000) AS INTEGER)"
_NODE_COLUMNS = (
    "epoch, node_id, host, pid, version, started_at_ms, heartbeat_at_ms, state, holds_from_ms"
)
CREATE_NODES = """CREATE TABLE IF NOT EXISTS nodes (
    epoch INTEGER PRIMARY KEY AUTOINCREMENT,
    node_id TEXT NOT NULL,
    host TEXT NOT NULL,
    pid INTEGER NOT NULL,
    version TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    heartbeat_at_ms INTEGER NOT NULL,
    state INTEGER NOT NULL,
    holds_from_ms INTEGER NOT NULL DEFAULT 0
)"""
CREATE_NODES_STATE_INDEX = "CREATE INDEX IF NOT EXISTS ix_nodes_state ON nodes (state)"
DB_NOW = "SELECT " + _NOW_MS
# A join, in one write transaction: the live node in the way (one of this id first), if any;
# else the insert, and the id's earlier epochs that may hold claims and are not live.
LIVE_NODE = (
    "SELECT " + _NODE_COLUMNS + ", " + _NOW_MS + " FROM nodes WHERE state IN (0, 1)"
    " AND heartbeat_at_ms >= " + _NOW_MS + " - :node_timeout_ms"
    " ORDER BY node_id = :node_id DESC, epoch DESC LIMIT 1"
)
INSERT_NODE = (
    "INSERT INTO nodes (node_id, host, pid, version, started_at_ms, heartbeat_at_ms, state,"
    " holds_from_ms) VALUES (:node_id, :host, :pid, :version, "
    + _NOW_MS
    + ", "
    + _NOW_MS
    + ", 0, 0)"
)
EARLIER_EPOCHS = (
    "SELECT " + _NODE_COLUMNS + " FROM nodes WHERE node_id = :node_id AND state IN (0, 1)"
    " AND epoch < :epoch AND heartbeat_at_ms < " + _NOW_MS + " - :node_timeout_ms"
    " ORDER BY epoch"
)
HEARTBEAT = (
    "UPDATE nodes SET heartbeat_at_ms = MAX(" + _NOW_MS + ", heartbeat_at_ms + 1),"
    " holds_from_ms = :holds_from_ms WHERE epoch = :epoch AND state IN (0, 1)"
)
DECLARE_DEAD = (
    "UPDATE nodes SET state = 3 WHERE epoch = :epoch AND state IN (0, 1)"
    " AND heartbeat_at_ms < " + _NOW_MS + " - :node_timeout_ms"
)
SET_STATE = (
    "UPDATE nodes SET state = :state WHERE epoch = :epoch AND state IN (0, 1) AND state <> :state"
)
LIST_NODES = (
    "SELECT * FROM (SELECT " + _NODE_COLUMNS + " FROM nodes WHERE state IN (0, 1)) UNION ALL"
    " SELECT * FROM (SELECT " + _NODE_COLUMNS + " FROM nodes WHERE state NOT IN (0, 1)"
    " ORDER BY epoch DESC LIMIT :finished) ORDER BY epoch DESC"
)

DECLARE_GONE = "UPDATE nodes SET state = 3 WHERE epoch = :epoch AND state IN (0, 1)"
NODE_ROW = "SELECT " + _NODE_COLUMNS + " FROM nodes WHERE epoch = :epoch"
# Never the newest row, as on MySQL (AUTOINCREMENT never hands an epoch out twice anyway).
PRUNE_NODES = (
    "DELETE FROM nodes WHERE state IN (2, 3) AND heartbeat_at_ms < " + _NOW_MS + " - :older_than_ms"
    " AND epoch < (SELECT MAX(epoch) FROM nodes)"
)

# -- leases (repos/sqlite/cluster.py): one runner for a chore, beside the nodes table ---------
CREATE_LEASES = """CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY NOT NULL,
    holder_epoch INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL
)"""
# An acquire, in one write transaction: is the taker running; renew or take over the lease row;
# if there is none, insert it. SQLite counts matched rows, so a renewal needs no +1.
RUNNING_EPOCH = "SELECT 1 FROM nodes WHERE epoch = :epoch AND state IN (0, 1)"
TAKE_LEASE = (
    "UPDATE leases SET holder_epoch = :epoch, expires_at_ms = " + _NOW_MS + " + :ttl_ms"
    " WHERE name = :name AND (holder_epoch = :epoch OR expires_at_ms <= "
    + _NOW_MS
    + " OR NOT EXISTS (SELECT 1 FROM nodes WHERE nodes.epoch = leases.holder_epoch"
    " AND nodes.state IN (0, 1)))"
)
NEW_LEASE = (
    "INSERT INTO leases (name, holder_epoch, expires_at_ms) VALUES (:name, :epoch, "
    + _NOW_MS
    + " + :ttl_ms) ON CONFLICT (name) DO NOTHING"
)
RELEASE_LEASE = "DELETE FROM leases WHERE name = :name AND holder_epoch = :epoch"


# -- the dependencies table (repos/sqlite/dependencies.py), beside nodes and leases -----------
# Ids as text (an entity's ids are ints or strings); the key leads with the waiting job.
CREATE_DEPENDENCIES = """CREATE TABLE IF NOT EXISTS dependencies (
    entity TEXT NOT NULL,
    job_id TEXT NOT NULL,
    job_at INTEGER NOT NULL,
    on_entity TEXT NOT NULL,
    on_id TEXT NOT NULL,
    on_at INTEGER NOT NULL,
    must INTEGER NOT NULL,
    check_at INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (entity, job_id, job_at, on_entity, on_id, on_at)
) WITHOUT ROWID"""
# The table as the version before check_at made it gets the column (then the indexes).
DEPENDENCY_COLUMNS = "SELECT name FROM pragma_table_info('dependencies')"
UPGRADE_DEPENDENCIES = "ALTER TABLE dependencies ADD COLUMN check_at INTEGER NOT NULL DEFAULT 0"
CREATE_DEPENDENCIES_INDEXES = (
    "CREATE INDEX IF NOT EXISTS ix_dependencies_check ON dependencies (check_at)",
    "CREATE INDEX IF NOT EXISTS ix_dependencies_on ON dependencies (on_entity, on_id, on_at)",
)
_EDGE_COLUMNS = "entity, job_id, job_at, on_entity, on_id, on_at, must"
# Written by the repository's insert, in the transaction storing the waiting rows; check_at 0:
# the release's next pass looks at them.
INSERT_EDGE = (
    "INSERT INTO dependencies (" + _EDGE_COLUMNS + ") VALUES (:entity, :job_id, :job_at,"
    " :on_entity, :on_id, :on_at, :must) ON CONFLICT DO NOTHING"
)
# Every edge of up to :limit waiting jobs with an edge to look at before :before_ms.
DUE_EDGES = (
    "SELECT d.entity, d.job_id, d.job_at, d.on_entity, d.on_id, d.on_at, d.must"
    " FROM dependencies AS d JOIN (SELECT DISTINCT entity, job_id, job_at FROM dependencies"
    " WHERE check_at < :before_ms LIMIT :limit) AS p"
    " ON d.entity = p.entity AND d.job_id = p.job_id AND d.job_at = p.job_at"
    " ORDER BY d.entity, d.job_id, d.job_at"
)
_EDGE_IS = (
    " WHERE entity = :entity AND job_id = :job_id AND job_at = :job_at"
    " AND on_entity = :on_entity AND on_id = :on_id AND on_at = :on_at"
)
POSTPONE_EDGE = "UPDATE dependencies SET check_at = :at_ms" + _EDGE_IS
POSTPONE_EDGE_TO_ITS_TIME = "UPDATE dependencies SET check_at = MIN(on_at, :at_ms)" + _EDGE_IS
_DEPENDENCY_IS = " WHERE on_entity = :on_entity AND on_id = :on_id AND on_at = :on_at"
CHECK_DEPENDENTS = "UPDATE dependencies SET check_at = :at_ms" + _DEPENDENCY_IS
CHECK_DEPENDENTS_AT_THEIR_TIME = (
    "UPDATE dependencies SET check_at = MIN(on_at, :at_ms)" + _DEPENDENCY_IS
)
REMOVE_EDGES = (
    "DELETE FROM dependencies WHERE entity = :entity AND job_id = :job_id AND job_at = :job_at"
)
COUNT_EDGES = "SELECT COUNT(*) FROM dependencies"

# -- schedules and blockouts (repos/sqlite/schedules.py), beside the nodes table ---------------
# Times are the caller's (the engine's clock), as in the shards. `trigger` is a reserved word.
CREATE_SCHEDULES = """CREATE TABLE IF NOT EXISTS schedules (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    entity TEXT NOT NULL,
    trigger_json TEXT NOT NULL,
    template_json TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER NULL,
    max_runs INTEGER NULL,
    runs INTEGER NOT NULL DEFAULT 0,
    priority INTEGER NOT NULL DEFAULT 500,
    category TEXT NOT NULL DEFAULT '',
    owner TEXT NOT NULL DEFAULT '',
    misfire TEXT NOT NULL,
    paused INTEGER NOT NULL DEFAULT 0,
    state INTEGER NOT NULL DEFAULT 0,
    next_at_ms INTEGER NULL,
    last_at_ms INTEGER NULL,
    generation INTEGER NOT NULL DEFAULT 0,
    version INTEGER NOT NULL DEFAULT 0,
    created_at_ms INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL,
    UNIQUE (name)
)"""
CREATE_BLOCKOUTS = """CREATE TABLE IF NOT EXISTS blockouts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    scope TEXT NOT NULL,
    target TEXT NOT NULL DEFAULT '',
    window_json TEXT NOT NULL,
    policy TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    UNIQUE (name)
)"""
_SCHEDULE_COLUMNS = (
    "id, name, entity, trigger_json, template_json, start_ms, end_ms, max_runs, runs, priority,"
    " category, owner, misfire, paused, state, next_at_ms, last_at_ms, generation, version,"
    " created_at_ms, updated_at_ms"
)
_SCHEDULE_SET = (
    "name = :name, entity = :entity, trigger_json = :trigger_json,"
    " template_json = :template_json, start_ms = :start_ms, end_ms = :end_ms,"
    " max_runs = :max_runs, runs = :runs, priority = :priority,"
    " category = :category, owner = :owner, misfire = :misfire, paused = :paused,"
    " state = :state, next_at_ms = :next_at_ms, last_at_ms = :last_at_ms,"
    " generation = :generation"
)
INSERT_SCHEDULE = (
    "INSERT INTO schedules (name, entity, trigger_json, template_json, start_ms, end_ms, max_runs,"
    " runs, priority, category, owner, misfire, paused, state, next_at_ms, last_at_ms, generation,"
    " version, created_at_ms, updated_at_ms) VALUES (:name, :entity, :trigger_json,"
    " :template_json, :start_ms, :end_ms, :max_runs, :runs, :priority, :category, :owner,"
    " :misfire, :paused, :state, :next_at_ms, :last_at_ms, :generation, 0, :created_at_ms,"
    " :updated_at_ms)"
)
SCHEDULE_BY_ID = "SELECT " + _SCHEDULE_COLUMNS + " FROM schedules WHERE id = :id"
SCHEDULE_BY_NAME = "SELECT " + _SCHEDULE_COLUMNS + " FROM schedules WHERE name = :name"
LIST_SCHEDULES = (
    "SELECT " + _SCHEDULE_COLUMNS + " FROM schedules WHERE id > :after_id"
    " AND (:entity IS NULL OR entity = :entity) ORDER BY id LIMIT :limit"
)
DUE_SCHEDULES = (
    "SELECT " + _SCHEDULE_COLUMNS + " FROM schedules WHERE state = 0 AND paused = 0"
    " AND next_at_ms < :before_ms ORDER BY next_at_ms LIMIT :limit"
)
WAITING_SCHEDULES = (
    "SELECT " + _SCHEDULE_COLUMNS + " FROM schedules WHERE state = 1 AND paused = 0"
    " AND id > :after_id ORDER BY id LIMIT :limit"
)
ADVANCE_SCHEDULE = (
    "UPDATE schedules SET state = :state, next_at_ms = :next_at_ms,"
    " last_at_ms = :last_at_ms, runs = :runs, version = version + 1,"
    " updated_at_ms = :now_ms WHERE id = :id AND version = :version"
)
REPLACE_SCHEDULE = (
    "UPDATE schedules SET "
    + _SCHEDULE_SET
    + ", version = version + 1, updated_at_ms = :updated_at_ms"
    " WHERE id = :id AND version = :version"
)
DELETE_SCHEDULE = "DELETE FROM schedules WHERE id = :id"
INSERT_BLOCKOUT = (
    "INSERT INTO blockouts (name, scope, target, window_json, policy, created_at_ms)"
    " VALUES (:name, :scope, :target, :window_json, :policy, :created_at_ms)"
)
LIST_BLOCKOUTS = (
    "SELECT id, name, scope, target, window_json, policy, created_at_ms FROM blockouts ORDER BY id"
)
DELETE_BLOCKOUT = "DELETE FROM blockouts WHERE name = :name"
# Categories paused store-wide (one row each while paused): every node reads them each heartbeat.
CREATE_CATEGORY_PAUSES = """CREATE TABLE IF NOT EXISTS category_pauses (
    name TEXT NOT NULL PRIMARY KEY,
    paused_at_ms INTEGER NOT NULL
)"""
# A pause of a paused category keeps the first pause's time.
PAUSE_CATEGORY = (
    "INSERT INTO category_pauses (name, paused_at_ms) VALUES (:name, :now_ms)"
    " ON CONFLICT (name) DO NOTHING"
)
RESUME_CATEGORY = "DELETE FROM category_pauses WHERE name = :name"
PAUSED_CATEGORIES = "SELECT name, paused_at_ms FROM category_pauses ORDER BY name"
CREATE_SCHEDULES_DUE_INDEX = (
    "CREATE INDEX IF NOT EXISTS ix_schedules_due ON schedules (state, paused, next_at_ms)"
)


# -- API tokens and the audit log (repos/sqlite/access.py), beside the nodes table ------------
CREATE_API_TOKENS = """CREATE TABLE IF NOT EXISTS api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    secret_hash TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    revoked_at_ms INTEGER NULL,
    UNIQUE (name),
    UNIQUE (secret_hash)
)"""
CREATE_AUDIT_LOG = """CREATE TABLE IF NOT EXISTS audit_log (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    before_json TEXT NULL,
    after_json TEXT NULL,
    request_id TEXT NOT NULL DEFAULT ''
)"""
_TOKEN_COLUMNS = "id, name, role, owner, secret_hash, created_at_ms, revoked_at_ms"
INSERT_TOKEN = (
    "INSERT INTO api_tokens (name, role, owner, secret_hash, created_at_ms)"
    " VALUES (:name, :role, :owner, :secret_hash, :created_at_ms)"
)
TOKEN_BY_ID = "SELECT " + _TOKEN_COLUMNS + " FROM api_tokens WHERE id = :id"
TOKEN_BY_HASH = "SELECT " + _TOKEN_COLUMNS + " FROM api_tokens WHERE secret_hash = :secret_hash"
LIST_TOKENS = "SELECT " + _TOKEN_COLUMNS + " FROM api_tokens ORDER BY id"
REVOKE_TOKEN = (
    "UPDATE api_tokens SET revoked_at_ms = :now_ms WHERE name = :name AND revoked_at_ms IS NULL"
)
COUNT_LIVE_TOKENS = "SELECT COUNT(*) FROM api_tokens WHERE revoked_at_ms IS NULL"
PING_TOKENS = "SELECT 1 FROM api_tokens LIMIT 1"
_AUDIT_COLUMNS = "id, at_ms, actor, action, target, before_json, after_json, request_id"
INSERT_AUDIT = (
    "INSERT INTO audit_log (at_ms, actor, action, target, before_json, after_json, request_id)"
    " VALUES (:at_ms, :actor, :action, :target, :before_json, :after_json, :request_id)"
)
AUDIT_BY_ID = "SELECT " + _AUDIT_COLUMNS + " FROM audit_log WHERE id = :id"
AUDIT_PAGE = (
    "SELECT " + _AUDIT_COLUMNS + " FROM audit_log"
    " WHERE :before_id IS NULL OR id < :before_id ORDER BY id DESC LIMIT :limit"
)


def marks(n: int) -> str:
    """The ``{keys}`` of an ``IN (...)`` list of `n` values."""
    return ", ".join(["?"] * n)


def rows(n: int) -> str:
    """The ``{rows}`` of an INSERT of `n` rows."""
    return ", ".join(["(" + marks(INSERT_WIDTH) + ")"] * n)


# -- execution history (repos/history.py, repos/sqlite/history.py): a table per UTC day -------
# As on MySQL (repos/mysql/sql.py, CREATE_HISTORY); made inside the ack's own transaction (DDL
# is transactional here). Ids as text; fired_at 0: never fired.
CREATE_HISTORY = (
    'CREATE TABLE IF NOT EXISTS "{table}" (finished_at INTEGER NOT NULL, entity TEXT NOT NULL,'
    " job_id TEXT NOT NULL, job_at INTEGER NOT NULL, attempt INTEGER NOT NULL,"
    " node TEXT NOT NULL, category TEXT NOT NULL DEFAULT '', due_at INTEGER NOT NULL,"
    " fired_at INTEGER NOT NULL, outcome INTEGER NOT NULL, error TEXT,"
    " PRIMARY KEY (finished_at, entity, job_id, job_at, attempt)) WITHOUT ROWID"
)
CREATE_HISTORY_INDEX = 'CREATE INDEX IF NOT EXISTS "ix_{table}_job" ON "{table}" (entity, job_id)'
# A repeat of a row already there (a flush written twice in one millisecond) changes nothing.
INSERT_HISTORY = (
    'INSERT OR IGNORE INTO "{table}" (entity, job_id, job_at, attempt, node, category, due_at,'
    " fired_at, finished_at, outcome, error) VALUES (:entity, :job_id, :job_at, :attempt, :node,"
    " :category, :due_at, :fired_at, :finished_at, :outcome, :error)"
)
DONE_BY_THIS_ACK = """
SELECT "{id}", "{at}" FROM "{table}"
WHERE claim_epoch = ?1 AND status = 2 AND fired_at = ?2 AND "{id}" IN ({keys})"""
_HISTORY_COLUMNS = (
    "entity, job_id, job_at, attempt, node, category, due_at, fired_at, finished_at, outcome, error"
)
HISTORY_OF_JOB = (
    "SELECT " + _HISTORY_COLUMNS + ' FROM "{table}" WHERE entity = :entity AND job_id = :job_id'
    " ORDER BY finished_at DESC, job_at DESC, attempt DESC LIMIT :limit"
)
HISTORY_PAGE = (
    "SELECT " + _HISTORY_COLUMNS + ' FROM "{table}"'
    " WHERE (:entity IS NULL OR entity = :entity) AND (:outcome IS NULL OR outcome = :outcome)"
    " AND (:start_ms IS NULL OR finished_at >= :start_ms)"
    " AND (:end_ms IS NULL OR finished_at < :end_ms)"
    " AND (:after_finished IS NULL OR (finished_at, entity, job_id, job_at, attempt)"
    " < (:after_finished, :after_entity, :after_job_id, :after_at, :after_attempt))"
    " ORDER BY finished_at DESC, entity DESC, job_id DESC, job_at DESC, attempt DESC"
    " LIMIT :limit"
)
_HISTORY_WINDOW = (
    " WHERE finished_at >= :start_ms AND finished_at < :end_ms"
    " AND (:entity IS NULL OR entity = :entity) AND (:category IS NULL OR category = :category)"
)
HISTORY_SLA_COUNTS = (
    "SELECT entity, category, outcome, COUNT(*),"
    ' SUM(fired_at > 0 AND fired_at - due_at > :late_ms) FROM "{table}"'
    + _HISTORY_WINDOW
    + " GROUP BY entity, category, outcome"
)
HISTORY_SLA_SAMPLE = (
    'SELECT entity, category, fired_at - due_at, finished_at - fired_at FROM "{table}"'
    + _HISTORY_WINDOW
    + " AND fired_at > 0 ORDER BY finished_at DESC LIMIT :limit"
)
