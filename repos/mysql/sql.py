"""Every SQL statement of the MySQL adapters, as named templates.

Placeholders in braces are identifiers only, and only ones that passed
``repos.shards.check_identifier``: ``{target}`` (and ``{source}``) is a shard (TABLE_TARGET or PARTITION_TARGET),
``{table}``, ``{name}`` and ``{database}`` are names, ``{id}`` and ``{at}`` the entity's id
and sharding-time columns (``{id_type}``: ID_TYPE's type for that id). Lists are rendered by
the caller: ``{rows}`` of INSERT, and ``{keys}``, ``{epochs}`` and ``{statuses}`` of ``IN (...)``, as literals
(repos/mysql/literals.py: type-checked, digits and hex only), ``{partitions}`` as PARTITION_DEFs (their
``{end_ms}``: the shard's end, an int) joined by commas, and ``{parts}`` by :func:`union_all`.

Values are ``%(name)s`` parameters, bound from a dict: both drivers (asyncmy, aiomysql) format
them client-side, each value escaped once however often the statement names it. A parameter
that may be NULL (``(%(x)s IS NULL OR col = %(x)s)``) narrows nothing when it is; the server
sees a literal NULL and folds the test away.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# The claim and ack columns are fixed-width and NOT NULL, so that claiming and acking rewrite a
# row in place: a NULL turning into a value grows the record, and InnoDB then deletes and
# re-inserts it (measured on the bare driver: 11k -> 20-27k rows/s through select+claim+ack).
# Reads turn the '' and 0 of "not yet" back into NULL (ROW_COLUMNS). Node ids are ASCII, at
# most 64 characters (the config's own rule). A job's category is its name ('' for none; names
# are [a-z0-9_], at most 64): no store-wide table of category ids to keep in step across nodes
# whose configs differ, and the usual row, with none, pays one length byte.
COLUMNS = """
    `{id}` {id_type} NOT NULL,
    `{at}` BIGINT NOT NULL,
    payload MEDIUMBLOB NOT NULL,
    status TINYINT NOT NULL,
    due_at BIGINT NOT NULL,
    attempts INT NOT NULL,
    claim_epoch BIGINT NOT NULL DEFAULT 0,
    claimed_by CHAR(64) CHARACTER SET ascii NOT NULL DEFAULT '',
    claimed_at BIGINT NOT NULL DEFAULT 0,
    fired_at BIGINT NOT NULL DEFAULT 0,
    last_error TEXT NULL,
    priority SMALLINT NOT NULL DEFAULT 500,
    category VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT ''"""

#: The id column's type by the entity's key type. Binary collation: str ids compare as Python
#: does ("ORD-1" is not "ord-1").
ID_TYPE = {int: "BIGINT", str: "VARCHAR(191) COLLATE utf8mb4_bin"}

#: Every new connection's isolation: under READ COMMITTED a locking read (the claim's FOR
#: UPDATE SKIP LOCKED) locks the rows it returns, not the gaps between them.
SESSION_INIT = "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED"
#: Around DDL: the note a lost IF NOT EXISTS race leaves is no news (driver._without_notes).
NOTES_OFF = "SET SESSION sql_notes = 0"
NOTES_ON = "SET SESSION sql_notes = 1"

# `store init` (or store.create_missing): the database itself; the engine makes the tables.
# Looked up first: IF NOT EXISTS on an existing one makes the drivers emit a Python warning.
DATABASE_EXISTS = "SELECT 1 FROM information_schema.schemata WHERE schema_name = %(database)s"
CREATE_DATABASE = "CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4"
#: What making the database takes, on that database (not on the server).
CREATE_DATABASE_PRIVILEGE = "CREATE"
#: What the engine's database user needs, on its database only, for the statements of this
#: module (docs/deploy.md, Security; tested by tests/integration/test_grants.py): shard and
#: history tables made and dropped, partitions added and dropped, columns added by upgrades,
#: rows read and written, leases and dead nodes deleted.
ENGINE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER")
# Read at open: a statement longer than max_allowed_packet breaks the connection ("Packet
# sequence number wrong"), so payloads are capped below it (repos.mysql.literals.payload_limits);
# and the version, as only MariaDB's JSON_TABLE keeps a payload's text as written
# (INSERT_DOCUMENT).
SERVER_LIMITS = "SELECT @@max_allowed_packet, VERSION()"
# Read at open by the store guard (repos/mysql/identity.py), and by the failover's probe of a
# host before writes move to it (repos/mysql/driver.py): what the server is, and if it is a
# Galera node, its cluster's state. SHOW, not @@wsrep_on: MySQL has no wsrep variables, and
# they are simply not in the answers.
SERVER_VARIABLES = (
    "SHOW GLOBAL VARIABLES WHERE Variable_name IN"
    " ('version', 'version_comment', 'wsrep_on', 'wsrep_provider', 'wsrep_node_name')"
)
WSREP_STATUS = (
    "SHOW GLOBAL STATUS WHERE Variable_name IN ('wsrep_cluster_size', 'wsrep_cluster_status',"
    " 'wsrep_local_state_comment', 'wsrep_ready', 'wsrep_incoming_addresses',"
    " 'wsrep_local_cert_failures', 'wsrep_local_bf_aborts')"
)

# The claim index: PENDING rows are the (0, due_at) range, each epoch's claims its own range.
# priority last, so that a ranked claim's step 1 (RANKED_SCAN_PART) reads (id, due_at,
# priority) from the index alone (InnoDB's secondary entries carry the primary key), where
# without it every row read cost a clustered-index lookup; the claim in due order reads the
# same range as before, and a claim or an ack moves the one entry as before (priority never
# changes in place). Status is in no index, so that an ack (status 1 -> 2, fired_at) moves no index entry: with
# (status, due_at) the claim and the ack each moved one, and the server spent a fifth of its
# work per job on that (benchmarks/RESULTS.md, "W2's server CPU").
# ix_at, on the sharding time (InnoDB appends the primary key: (at, id)), serves the job
# listing (FIND, keyset on (at, id)): a page is an index range read that stops once full,
# where without it every page read and sorted the whole shard (benchmarks/RESULTS.md,
# "Listing jobs over 10M rows"). The sharding time never changes in place (a move inserts
# anew), so claims and acks never touch it; it costs the insert one more index entry.
CREATE_SHARD_TABLE = (
    "CREATE TABLE IF NOT EXISTS `{table}` ("
    + COLUMNS
    + """,
    PRIMARY KEY (`{id}`),
    KEY ix_claim (claim_epoch, due_at, priority),
    KEY ix_at (`{at}`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
)

# MySQL wants the partitioning column in every unique key, so the primary key is
# (id, shard_at): ids are unique per shard, exactly as in the multi-table layout.
CREATE_PARTITIONED_TABLE = (
    "CREATE TABLE IF NOT EXISTS `{table}` ("
    + COLUMNS
    + """,
    shard_at BIGINT NOT NULL,
    PRIMARY KEY (`{id}`, shard_at),
    KEY ix_claim (claim_epoch, due_at, priority),
    KEY ix_at (`{at}`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
PARTITION BY RANGE (shard_at) ({partitions})"""
)

#: What a statement over one shard names: a table, or a partition of the layout's one table.
TABLE_TARGET = "`{table}`"
PARTITION_TARGET = "`{table}` PARTITION (`{name}`)"

PARTITION_DEF = "PARTITION `{name}` VALUES LESS THAN ({end_ms})"
ADD_PARTITIONS = "ALTER TABLE `{table}` ADD PARTITION ({partitions})"
DROP_PARTITION = "ALTER TABLE `{table}` DROP PARTITION `{name}`"
DROP_TABLE = "DROP TABLE IF EXISTS `{table}`"

LIST_TABLES = """
SELECT table_name FROM information_schema.tables
WHERE table_schema = DATABASE() AND table_name LIKE %(pattern)s"""

LIST_PARTITIONS = """
SELECT partition_name FROM information_schema.partitions
WHERE table_schema = DATABASE() AND table_name = %(table)s AND partition_name IS NOT NULL
ORDER BY partition_ordinal_position"""

_INSERT_COLUMNS = (
    "`{id}`, `{at}`, payload, status, due_at, attempts, claim_epoch, claimed_by, claimed_at,"
    " priority, category"
)
_IGNORE = " ON DUPLICATE KEY UPDATE `{id}` = `{id}`"
INSERT = "INSERT INTO {target} (" + _INSERT_COLUMNS + ") VALUES {rows}"
INSERT_IGNORE = INSERT + _IGNORE
# The partitioned layout's rows name their shard too: shard_at, the partitioning column.
INSERT_PARTITIONED = "INSERT INTO {target} (" + _INSERT_COLUMNS + ", shard_at) VALUES {rows}"
INSERT_PARTITIONED_IGNORE = INSERT_PARTITIONED + _IGNORE

# The same rows from one literal (repos/entity.py, EncodedBatch.document): a JSON array of
# [key, at_ms, payload] rows that JSON_TABLE turns into a table, where VALUES took a hex
# literal and two numbers rendered per row (W1 client CPU per job -25%, server the same:
# benchmarks/RESULTS.md, "W1 from one document"). On MariaDB a column of type JSON takes the
# payload object's text as it was written; MySQL would write it out again (spaces, keys
# reordered), so there the adapter keeps VALUES (repos/mysql/adapter.py). {state}: the
# columns every row of the statement shares, status to category (then the partitioned
# layout's shard_at). The document's column names hold spaces, which no entity's may
# (repos/shards.py), so that an ON DUPLICATE naming the id column reads the table's.
_DOCUMENT_COLUMNS = (
    "`{id}`, `{at}`, due_at, payload, status, attempts, claim_epoch, claimed_by, claimed_at,"
    " priority, category"
)
_FROM_DOCUMENT = """
SELECT j.`row key`, j.`row at`, j.`row at`, j.`row payload`, {state}
FROM JSON_TABLE({rows}, '$[*]' COLUMNS (`row key` {id_type} PATH '$[0]',
 `row at` BIGINT PATH '$[1]', `row payload` JSON PATH '$[2]')) AS j"""
INSERT_DOCUMENT = "INSERT INTO {target} (" + _DOCUMENT_COLUMNS + ")" + _FROM_DOCUMENT
INSERT_DOCUMENT_IGNORE = INSERT_DOCUMENT + _IGNORE
INSERT_PARTITIONED_DOCUMENT = (
    "INSERT INTO {target} (" + _DOCUMENT_COLUMNS + ", shard_at)" + _FROM_DOCUMENT
)
INSERT_PARTITIONED_DOCUMENT_IGNORE = INSERT_PARTITIONED_DOCUMENT + _IGNORE

# The claim of one shard. PENDING rows are the claim index's (0, due_at) range; status = 0
# only filters out a row of a status this version does not know. The payload only for rows
# due before payload_before_ms: the rest are read when nearly due.
CLAIM_SELECT_ONE = """SELECT `{id}`, `{at}`, due_at, attempts,
 IF(due_at < %(payload_before_ms)s, payload, NULL), priority, category, {shard_no} AS shard_no
 FROM {target}
 WHERE claim_epoch = 0 AND status = 0
 AND due_at < %(before_ms)s ORDER BY due_at LIMIT %(limit)s FOR UPDATE SKIP LOCKED"""
# Over several shards, one subselect each, merged: one statement however many the window
# spans (the merge costs a derived table and a sort of its rows, which one shard needs not).
CLAIM_SELECT = "{parts} ORDER BY due_at LIMIT %(limit)s"
CLAIM_SELECT_PART = "(" + CLAIM_SELECT_ONE + ")"
# The claim of a backlog (claim_due(boost_per_minute=...)), in repos/ranked.py's two steps.
# Step 1, unlocked, along the claim index: the due time that bounds the window (the shard's
# nth-oldest due unclaimed row), then the oldest rows of each shard due before scan_before_ms
# (scan_rows at most), ranked: repos/options.py's rank(), in double precision as Python
# computes it (a decimal literal would make the product exact, and ties could fall otherwise).
# Both read the claim index alone ("Using index"): no status = 0 here, status being in no index;
# every known status but PENDING is out of the (0, due_at) range, and step 2 checks it again.
RANKED_NTH_PART = """(SELECT due_at FROM {target}
 WHERE claim_epoch = 0 AND due_at < %(before_ms)s
 ORDER BY due_at LIMIT 1 OFFSET %(nth)s)"""
RANKED_SCAN_PART = """(SELECT `{id}`, due_at, priority, {shard_no} AS shard_no FROM {target}
 WHERE claim_epoch = 0 AND due_at < %(scan_before_ms)s
 ORDER BY due_at LIMIT %(scan_rows)s)"""
RANKED_SCAN = """SELECT `{id}`, due_at, priority, shard_no FROM ({parts}) AS oldest
 ORDER BY due_at * CAST(%(boost_per_ms)s AS DOUBLE) - priority, due_at LIMIT %(pick_rows)s"""
# Step 2, in one shard: the ids picked, by primary key (the claim index's range would lock every
# row due), skipping those another claim holds or took meanwhile; read as a claim reads them.
RANKED_LOCK = """SELECT `{id}`, `{at}`, due_at, attempts,
 IF(due_at < %(payload_before_ms)s, payload, NULL), priority, category, {shard_no} AS shard_no
 FROM {target} FORCE INDEX (PRIMARY)
 WHERE `{id}` IN ({keys}) AND claim_epoch = 0 AND status = 0 AND due_at < %(before_ms)s
 FOR UPDATE SKIP LOCKED"""

CLAIM_UPDATE = """
UPDATE {target} SET status = 1, claim_epoch = %(epoch)s, claimed_by = %(node_id)s,
    claimed_at = %(now_ms)s, attempts = attempts + 1
WHERE `{id}` IN ({keys})"""

# Every write about a claim is conditional on the claim's epoch: a row taken over is left
# alone. By primary key (the ids listed), never by the epoch's range of the claim index.
READ_PAYLOADS = """
SELECT `{id}`, `{at}`, payload FROM {target}
WHERE claim_epoch = %(epoch)s AND status = 1 AND `{id}` IN ({keys})"""

MARK_DONE = """
UPDATE {target} SET status = 2, fired_at = %(fired_at_ms)s
WHERE claim_epoch = %(epoch)s AND status = 1 AND `{id}` IN ({keys})"""

# A retry makes the row PENDING again (new_epoch 0); a last failure keeps the epoch. A job
# postponed without running hands its attempt back (handed_back 1) and keeps its fired_at (NULL).
MARK_FAILED = """
UPDATE {target} SET status = %(status)s, claim_epoch = %(new_epoch)s,
    due_at = COALESCE(%(retry_at_ms)s, due_at), last_error = %(error)s,
    fired_at = COALESCE(%(fired_at_ms)s, fired_at), attempts = attempts - %(handed_back)s
WHERE claim_epoch = %(epoch)s AND status = 1 AND `{id}` = %(key)s"""

# Back to PENDING, the claim's attempt handed back: the next claim gives the same attempt.
_RELEASE = """
UPDATE {target} SET status = 0, claim_epoch = 0, claimed_by = '', claimed_at = 0,
    attempts = GREATEST(attempts - 1, 0)
WHERE """
RELEASE = _RELEASE + "claim_epoch = %(epoch)s AND status = 1 AND `{id}` IN ({keys})"
# The claim index's ranges of the epochs listed ({epochs}: ints), from from_ms on (to
# before_ms, if given); the rows of one claim only, if claimed_at_ms. Locked first, skipping
# rows an open transaction holds (a frozen node's ack would hold up the whole statement), then
# moved by id; what stays locked is counted by a plain read.
_TAKE_OVER_RANGE = (
    " FROM {target} WHERE claim_epoch IN ({epochs}) AND due_at >= %(from_ms)s AND status = 1"
    " AND (%(before_ms)s IS NULL OR due_at < %(before_ms)s)"
    " AND (%(claimed_at_ms)s IS NULL OR claimed_at = %(claimed_at_ms)s)"
)
TAKE_OVER_LOCK = "SELECT `{id}`" + _TAKE_OVER_RANGE + " FOR UPDATE SKIP LOCKED"
TAKE_OVER = _RELEASE + "claim_epoch IN ({epochs}) AND status = 1 AND `{id}` IN ({keys})"
TAKE_OVER_LEFT = "SELECT COUNT(*)" + _TAKE_OVER_RANGE
# The epochs of a shard's claims: one index entry read per epoch (a loose index scan), not
# every row ever claimed (a claim's rows keep its epoch when they finish).
CLAIM_EPOCHS_PART = """(SELECT {shard_no} AS shard_no, claim_epoch FROM {target}
 WHERE claim_epoch > 0 GROUP BY claim_epoch)"""

# MySQL assigns left to right, each assignment seeing the ones before: claim_epoch first, while
# status is still the old one. A PENDING row leaves the claim index's PENDING range (-1); a
# WAITING one is out of it already (-2).
CANCEL = """
UPDATE {target} SET claim_epoch = IF(status = 0, -1, claim_epoch), status = 4
WHERE status IN (0, 1, 6) AND `{id}` IN ({keys})"""

# -- dependencies (repos/dependencies.py) ------------------------------------------------------
# The rows of some ids in every shard and their status, by primary key: what a dependency named
# by id stands for, and how far it got.
LOCATE_PART = """(SELECT {shard_no} AS shard_no, `{id}`, `{at}`, status FROM {target}
 WHERE `{id}` IN ({keys}))"""
# A WAITING row (6) whose dependencies are done: PENDING, into the claim index's PENDING range.
WAKE = """
UPDATE {target} SET status = 0, claim_epoch = 0 WHERE status = 6 AND `{id}` IN ({keys})"""
# One whose must-succeed dependency did not: its failure, without a fire (fired_at unset).
FAIL_WAITING = """
UPDATE {target} SET status = %(status)s, last_error = %(error)s
WHERE status = 6 AND `{id}` = %(key)s"""

ROW_COLUMNS = (
    "`{id}`, `{at}`, status, due_at, attempts, NULLIF(claimed_by, ''), NULLIF(claimed_at, 0),"
    " NULLIF(fired_at, 0), last_error, payload, claim_epoch, priority, category"
)
# The rows named that another epoch than the caller's holds now (StoredRow columns).
FENCED = (
    "SELECT " + ROW_COLUMNS + " FROM {target} WHERE claim_epoch <> %(epoch)s AND `{id}` IN ({keys})"
)
GET = "{parts} ORDER BY `{at}`"
GET_PART = (
    "(SELECT " + ROW_COLUMNS + ", {shard_no} AS shard_no FROM {target} WHERE `{id}` = %(key)s)"
)

# Keyset pagination: rows after (after_at_ms, after_key), if given; of one status, if given
# (a filter: status is in no index, and the sharding time neither, so a page reads the
# window's shards either way).
PAGE = "{parts} ORDER BY `{at}`, `{id}` LIMIT %(limit)s"
PAGE_PART = (
    "(SELECT " + ROW_COLUMNS + ", {shard_no} AS shard_no FROM {target}"
    " WHERE `{at}` >= %(start_ms)s AND `{at}` < %(end_ms)s"
    " AND (%(status)s IS NULL OR status = %(status)s)"
    " AND (%(after_at_ms)s IS NULL OR `{at}` > %(after_at_ms)s"
    " OR (`{at}` = %(after_at_ms)s AND `{id}` > %(after_key)s))"
    " ORDER BY `{at}`, `{id}` LIMIT %(limit)s)"
)


# -- job control (repos/control.py) ----------------------------------------------------------
# One shard's rows matching a JobQuery, after the cursor, in (sharding time, id) order. Each
# test narrows nothing when its parameter is NULL; {statuses}: literal ints (NULL for none
# asked, and then %(any_status)s is true).
def _find(cmp: str, order: str) -> str:
    """FIND in one direction: rows after the cursor, `cmp` (> or <), in `order` (ASC, DESC)."""
    return (
        "SELECT " + ROW_COLUMNS + ", 0 AS shard_no FROM {target}"
        " WHERE (%(from_ms)s IS NULL OR `{at}` >= %(from_ms)s)"
        " AND (%(before_ms)s IS NULL OR `{at}` < %(before_ms)s)"
        " AND (%(any_status)s OR status IN ({statuses}))"
        " AND (%(category)s IS NULL OR category = %(category)s)"
        " AND (%(key_from)s IS NULL OR `{id}` >= %(key_from)s)"
        " AND (%(key_before)s IS NULL OR `{id}` < %(key_before)s)"
        " AND (%(after_at_ms)s IS NULL OR `{at}` " + cmp + " %(after_at_ms)s"
        " OR (`{at}` = %(after_at_ms)s AND `{id}` " + cmp + " %(after_key)s))"
        " ORDER BY `{at}` " + order + ", `{id}` " + order + " LIMIT %(limit)s"
    )


FIND = _find(">", "ASC")
FIND_DESC = _find("<", "DESC")
# Rows still in the state the caller saw to another; with %(release)s, the claim cleared and
# its attempt handed back (a claimed row paused). No assignment reads status (MySQL assigns
# left to right).
TRANSITION = """
UPDATE {target} SET status = %(status)s, claim_epoch = %(epoch)s,
    due_at = COALESCE(%(due_ms)s, due_at), claimed_by = IF(%(release)s, '', claimed_by),
    claimed_at = IF(%(release)s, 0, claimed_at),
    attempts = IF(%(release)s, GREATEST(attempts - 1, 0), attempts)
WHERE status = %(seen_status)s AND claim_epoch = %(seen_epoch)s AND `{id}` IN ({keys})"""
_STILL_SEEN = " WHERE `{id}` = %(key)s AND status = %(status)s AND claim_epoch = %(epoch)s"
# A row to another time. Multi-table: copied into the target shard and deleted from its own,
# in one transaction; in place within one shard. Partitioned: one UPDATE of the whole table
# (the server moves the row between partitions; through a partition target it would refuse).
MOVE_COPY = (
    "INSERT INTO {target} (`{id}`, `{at}`, payload, status, due_at, attempts, claim_epoch,"
    " claimed_by, claimed_at, fired_at, last_error, priority, category)"
    " SELECT `{id}`, %(at_ms)s, payload, status, %(due_ms)s, attempts, claim_epoch,"
    " claimed_by, claimed_at, fired_at, last_error, priority, category FROM {source}" + _STILL_SEEN
)
MOVE_DELETE = "DELETE FROM {source}" + _STILL_SEEN
MOVE_IN_PLACE = "UPDATE {source} SET `{at}` = %(at_ms)s, due_at = %(due_ms)s" + _STILL_SEEN
MOVE_PARTITIONED = (
    "UPDATE `{table}` SET `{at}` = %(at_ms)s, due_at = %(due_ms)s, shard_at = %(shard_at)s"
    + _STILL_SEEN
    + " AND shard_at = %(seen_shard_at)s"
)
# In the move's transaction: the edges of jobs waiting for the moved row follow it to its new
# time (the release finds a dependency by id and time), looked at on the release's next pass
# (check_at 0: one parked until the old time would wake its dependents late). Through
# ix_dependencies_on.
MOVE_DEPENDENTS = (
    "UPDATE dependencies SET on_at = %(at_ms)s, check_at = 0"
    " WHERE on_entity = %(entity)s AND on_id = %(on_id)s AND on_at = %(seen_at_ms)s"
)
CREATE_REVOCATIONS = """CREATE TABLE IF NOT EXISTS revocations (
    epoch BIGINT NOT NULL,
    entity VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    job_id VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    at_ms BIGINT NOT NULL,
    PRIMARY KEY (epoch, entity, job_id, at_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
REVOKE = (
    "INSERT INTO revocations (epoch, entity, job_id, at_ms) VALUES (%(epoch)s, %(entity)s,"
    " %(job_id)s, %(at_ms)s) ON DUPLICATE KEY UPDATE epoch = epoch"
)
REVOCATIONS = "SELECT epoch, entity, job_id, at_ms FROM revocations WHERE epoch = %(epoch)s"
# Revocations no running epoch will take: posted for an epoch that stopped or died before its
# next read (the row itself changed already; only the node's wheel needed telling). By the
# primary key's epoch prefix, against the nodes table's handful of running rows.
PRUNE_REVOCATIONS = (
    "DELETE FROM revocations WHERE epoch NOT IN (SELECT epoch FROM nodes WHERE state IN (0, 1))"
)
FORGET_REVOCATION = (
    "DELETE FROM revocations WHERE epoch = %(epoch)s AND entity = %(entity)s"
    " AND job_id = %(job_id)s AND at_ms = %(at_ms)s"
)

# A scan of each shard (status is in no index): for the shards CLI and shards about to drop.
COUNT_PART = "(SELECT {shard_no} AS shard_no, status, COUNT(*) FROM {target} GROUP BY status)"

# Status outside repos.base.STATUS_RANGE: every row of the shard (a scan), or only the rows
# waiting to be claimed due before due_before_ms (the claim index's PENDING range, rows read
# for their status). The count is of every such row, the LIMIT only cuts the ids listed.
UNKNOWN_STATUS_PART = """(SELECT {shard_no} AS shard_no, `{id}`, status, COUNT(*) OVER ()
 FROM {target} WHERE status < %(first)s OR status > %(last)s ORDER BY `{id}` LIMIT %(limit)s)"""
UNKNOWN_STATUS_DUE_PART = """(SELECT {shard_no} AS shard_no, `{id}`, status, COUNT(*) OVER ()
 FROM {target} WHERE claim_epoch = 0 AND due_at < %(due_before_ms)s
 AND (status < %(first)s OR status > %(last)s) ORDER BY `{id}` LIMIT %(limit)s)"""

# Shards made by the version before epoch claims (no claim_epoch, KEY ix_status_due), brought
# to this shape when an adapter finds them: the column (-1, "no epoch", for the rows that
# finished already, so they stay out of the PENDING range), PENDING rows to 0 and the rows it
# left CLAIMED back to PENDING (both through the old index, in bounded steps), then the index.
OLD_SHARDS = """
SELECT DISTINCT table_name FROM information_schema.statistics
WHERE table_schema = DATABASE() AND table_name LIKE %(pattern)s AND index_name = 'ix_status_due'"""
HAS_CLAIM_EPOCH = """
SELECT 1 FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name = %(table)s AND column_name = 'claim_epoch'"""
UPGRADE_ADD_EPOCH = "ALTER TABLE `{table}` ADD COLUMN claim_epoch BIGINT NOT NULL DEFAULT -1"
UPGRADE_PENDING = (
    "UPDATE `{table}` SET claim_epoch = 0 WHERE status = 0 AND claim_epoch <> 0 LIMIT %(limit)s"
)
UPGRADE_RELEASE = """
UPDATE `{table}` SET status = 0, claim_epoch = 0, claimed_by = '', claimed_at = 0,
    attempts = GREATEST(attempts - 1, 0)
WHERE status = 1 AND claim_epoch <= 0 LIMIT %(limit)s"""
UPGRADE_INDEX = """
ALTER TABLE `{table}` ALTER COLUMN claim_epoch SET DEFAULT 0,
    ADD KEY ix_claim (claim_epoch, due_at, priority), DROP KEY ix_status_due"""
# Shards made before priorities and categories: both columns added with their defaults (an
# instant ALTER on MariaDB 10.3+ and MySQL 8.0.29+: no row is rewritten). The tables matching
# the pattern that have the priority column; the others lack it. (Not one NOT EXISTS query
# over information_schema.tables and .columns: that crashed MariaDB 10.11.19, signal 11
# freeing its temporary table.)
HAS_PRIORITY = """
SELECT DISTINCT table_name FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name LIKE %(pattern)s AND column_name = 'priority'"""
UPGRADE_ADD_PRIORITY = """
ALTER TABLE `{table}` ADD COLUMN priority SMALLINT NOT NULL DEFAULT 500,
    ADD COLUMN category VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT ''"""
# Shards made before the claim index covered a ranked claim's step 1: ix_claim (claim_epoch,
# due_at), rebuilt with priority (online: InnoDB builds it in place while claims and inserts go
# on, then swaps it in). The tables matching the pattern whose ix_claim has priority already.
COVERING_CLAIM_INDEX = """
SELECT DISTINCT table_name FROM information_schema.statistics
WHERE table_schema = DATABASE() AND table_name LIKE %(pattern)s AND index_name = 'ix_claim'
    AND column_name = 'priority'"""
UPGRADE_CLAIM_INDEX = """
ALTER TABLE `{table}` DROP KEY ix_claim, ADD KEY ix_claim (claim_epoch, due_at, priority)"""


# -- membership (repos/mysql/cluster.py): the nodes table, beside the shards ------------------
# Times are the server's clock, read inside each statement: no node's clock decides whether
# another node is dead. UTC_TIMESTAMP, so that the session's time zone (and its DST) is moot.
# Node ids compare byte for byte (ascii_bin), as claimed_by does.
_NOW_MS = "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)) DIV 1000)"
_NODE_COLUMNS = (
    "epoch, node_id, host, pid, version, started_at_ms, heartbeat_at_ms, state, holds_from_ms"
)

# live_id is the node id while the row may be live (ACTIVE, DRAINING) and NULL once it is
# not: its unique key lets one process at a time join under an id, races included. writer is
# the Galera node (wsrep_node_name) the process writes through, '' on other servers: read by
# the guard against an undeclared multi-writer setup (repos/server_guard.py).
CREATE_NODES = """CREATE TABLE IF NOT EXISTS nodes (
    epoch BIGINT NOT NULL AUTO_INCREMENT,
    node_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    live_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
    host VARCHAR(255) NOT NULL,
    pid INT NOT NULL,
    version VARCHAR(64) NOT NULL,
    started_at_ms BIGINT NOT NULL,
    heartbeat_at_ms BIGINT NOT NULL,
    state TINYINT NOT NULL,
    holds_from_ms BIGINT NOT NULL DEFAULT 0,
    writer VARCHAR(64) NOT NULL DEFAULT '',
    PRIMARY KEY (epoch),
    UNIQUE KEY ux_live (live_id),
    KEY ix_node (node_id, state),
    KEY ix_state (state)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""

DB_NOW = "SELECT " + _NOW_MS
# A join: free the id's slot if its holder's heartbeat is too old, then take it (a duplicate
# key: a live node holds it, LIVE_HOLDER names it), then read the epoch the insert made.
FREE_STALE_ID = (
    "UPDATE nodes SET live_id = NULL WHERE live_id = %(node_id)s"
    " AND heartbeat_at_ms < " + _NOW_MS + " - %(node_timeout_ms)s"
)
# On Galera the row names the node that runs the statement, evaluated there: after a failover
# the next heartbeat names the new one.
_GALERA_WRITER = "@@wsrep_node_name"


def _insert_node(writer: str) -> str:
    return (
        "INSERT INTO nodes (node_id, live_id, host, pid, version, started_at_ms, heartbeat_at_ms,"
        " state, holds_from_ms, writer) VALUES (%(node_id)s, %(node_id)s, %(host)s, %(pid)s,"
        f" %(version)s, {_NOW_MS}, {_NOW_MS}, 0, 0, {writer})"
    )


INSERT_NODE = _insert_node("''")
GALERA_INSERT_NODE = _insert_node(_GALERA_WRITER)
LAST_EPOCH = "SELECT LAST_INSERT_ID()"
LIVE_HOLDER = "SELECT " + _NODE_COLUMNS + ", " + _NOW_MS + " FROM nodes WHERE live_id = %(node_id)s"
# The id's earlier epochs that may hold claims and are not live: a crashed run's.
EARLIER_EPOCHS = (
    "SELECT " + _NODE_COLUMNS + " FROM nodes WHERE node_id = %(node_id)s AND state IN (0, 1)"
    " AND epoch < %(epoch)s AND heartbeat_at_ms < " + _NOW_MS + " - %(node_timeout_ms)s"
    " ORDER BY epoch"
)


def _heartbeat(writer: str) -> str:
    # Strictly later than the last heartbeat: the row always changes, so the affected-row count
    # (changed rows, the drivers' default) says whether the epoch is still ACTIVE or DRAINING.
    return (
        f"UPDATE nodes SET heartbeat_at_ms = GREATEST({_NOW_MS}, heartbeat_at_ms + 1),"
        f" holds_from_ms = %(holds_from_ms)s, writer = {writer}"
        " WHERE epoch = %(epoch)s AND state IN (0, 1)"
    )


HEARTBEAT = _heartbeat("''")
GALERA_HEARTBEAT = _heartbeat(_GALERA_WRITER)
# The live nodes that write through another Galera node than the one answering, and its name.
OTHER_WRITERS = (
    "SELECT node_id, epoch, writer FROM nodes WHERE state IN (0, 1)"
    " AND writer <> '' AND writer <> @@wsrep_node_name"
    " AND heartbeat_at_ms >= " + _NOW_MS + " - %(node_timeout_ms)s ORDER BY epoch"
)
GALERA_NODE_NAME = "SELECT @@wsrep_node_name"
# A nodes table made before the writer column: it is added with its default.
NODES_HAVE_WRITER = """
SELECT 1 FROM information_schema.columns
WHERE table_schema = DATABASE() AND table_name = 'nodes' AND column_name = 'writer'"""
ADD_NODES_WRITER = "ALTER TABLE nodes ADD COLUMN writer VARCHAR(64) NOT NULL DEFAULT ''"
DECLARE_DEAD = (
    "UPDATE nodes SET state = 3, live_id = NULL WHERE epoch = %(epoch)s AND state IN (0, 1)"
    " AND heartbeat_at_ms < " + _NOW_MS + " - %(node_timeout_ms)s"
)
# DRAINING keeps the id's slot; LEFT frees it.
SET_STATE = """
UPDATE nodes SET state = %(state)s, live_id = IF(%(state)s = 1, live_id, NULL)
WHERE epoch = %(epoch)s AND state IN (0, 1) AND state <> %(state)s"""
LIST_NODES = (
    "(SELECT " + _NODE_COLUMNS + " FROM nodes WHERE state IN (0, 1)) UNION ALL"
    " (SELECT " + _NODE_COLUMNS + " FROM nodes WHERE state NOT IN (0, 1)"
    " ORDER BY epoch DESC LIMIT %(finished)s) ORDER BY epoch DESC"
)
# A joiner found the row's process gone (same host, no such pid): DEAD whatever its age.
DECLARE_GONE = (
    "UPDATE nodes SET state = 3, live_id = NULL WHERE epoch = %(epoch)s AND state IN (0, 1)"
)
NODE_ROW = "SELECT " + _NODE_COLUMNS + " FROM nodes WHERE epoch = %(epoch)s"
# Never the newest row: a server that rebuilds its AUTO_INCREMENT counter from MAX(epoch) at
# restart (MySQL 5.7) would hand that epoch out again. The derived table lets MySQL read the
# table the statement deletes from.
PRUNE_NODES = (
    "DELETE FROM nodes WHERE state IN (2, 3) AND heartbeat_at_ms < "
    + _NOW_MS
    + " - %(older_than_ms)s"
    " AND epoch < (SELECT newest FROM (SELECT MAX(epoch) AS newest FROM nodes) AS n)"
)

# -- leases (repos/mysql/cluster.py): one runner for a chore, beside the nodes table ----------
CREATE_LEASES = """CREATE TABLE IF NOT EXISTS leases (
    name VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    holder_epoch BIGINT NOT NULL,
    expires_at_ms BIGINT NOT NULL,
    PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
# An acquire: renew or take over the lease row; if there is none, insert it (a duplicate key:
# another node made it first, and it is theirs). Each is one statement, taking nothing unless
# the taker's epoch is running. Not a transaction holding the taker's own row locked: a taker
# frozen between its statements would keep that lock, and every declare_dead of it would wait.
# A declare_dead that commits during the statement may let a dead epoch take the lease once:
# the others find its holder not running and take it at their next try (one pass overlapping
# another, which maintenance tolerates).
_TAKER_RUNNING = "EXISTS (SELECT 1 FROM nodes WHERE epoch = %(epoch)s AND state IN (0, 1))"
# expires_at_ms first: MySQL assigns left to right, so its IF still sees the old holder. A
# renewal always moves the expiry (+1 at least), so the changed-row count says who won.
_LEASE_FREE = (
    "(holder_epoch = %(epoch)s OR expires_at_ms <= " + _NOW_MS + " OR NOT EXISTS (SELECT 1 FROM"
    " nodes WHERE nodes.epoch = leases.holder_epoch AND nodes.state IN (0, 1)))"
)
_LEASE_END = _NOW_MS + " + %(ttl_ms)s"
TAKE_LEASE = (
    "UPDATE leases SET expires_at_ms = IF(holder_epoch = %(epoch)s, GREATEST(" + _LEASE_END + ","
    " expires_at_ms + 1), " + _LEASE_END + "), holder_epoch = %(epoch)s"
    " WHERE name = %(name)s AND " + _LEASE_FREE + " AND " + _TAKER_RUNNING
)
NEW_LEASE = (
    "INSERT INTO leases (name, holder_epoch, expires_at_ms) SELECT %(name)s, %(epoch)s, "
    + _LEASE_END
    + " FROM DUAL WHERE "
    + _TAKER_RUNNING
    + " ON DUPLICATE KEY UPDATE holder_epoch = holder_epoch"
)
RELEASE_LEASE = "DELETE FROM leases WHERE name = %(name)s AND holder_epoch = %(epoch)s"


# -- the dependencies table (repos/mysql/dependencies.py), beside nodes and leases ------------
# Ids as text (an entity's ids are ints or strings), compared byte for byte as the shards' are;
# the key leads with the waiting job. Made by the first insert with edges, or the release.
CREATE_DEPENDENCIES = """CREATE TABLE IF NOT EXISTS dependencies (
    entity VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    job_id VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    job_at BIGINT NOT NULL,
    on_entity VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    on_id VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    on_at BIGINT NOT NULL,
    must TINYINT NOT NULL,
    check_at BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (entity, job_id, job_at, on_entity, on_id, on_at),
    KEY ix_dependencies_check (check_at),
    KEY ix_dependencies_on (on_entity, on_id, on_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
# The table as the version before check_at made it: the column and both keys added.
DEPENDENCIES_HAS_CHECK_AT = (
    "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE()"
    " AND table_name = 'dependencies' AND column_name = 'check_at'"
)
UPGRADE_DEPENDENCIES = (
    "ALTER TABLE dependencies ADD COLUMN check_at BIGINT NOT NULL DEFAULT 0,"
    " ADD KEY ix_dependencies_check (check_at), ADD KEY ix_dependencies_on (on_entity, on_id, on_at)"
)
_EDGE_COLUMNS = "entity, job_id, job_at, on_entity, on_id, on_at, must"
# Written by the repository's insert, in the transaction storing the waiting rows ({rows}:
# literals, repos/mysql/literals.py); check_at 0: the release's next pass looks at them.
INSERT_EDGES = (
    "INSERT INTO dependencies (" + _EDGE_COLUMNS + ") VALUES {rows}"
    " ON DUPLICATE KEY UPDATE must = must"
)
# Every edge of up to %(limit)s waiting jobs with an edge to look at before %(before_ms)s
# (through ix_dependencies_check: the edges parked for later are not read).
DUE_EDGES = (
    "SELECT d.entity, d.job_id, d.job_at, d.on_entity, d.on_id, d.on_at, d.must"
    " FROM dependencies AS d JOIN (SELECT DISTINCT entity, job_id, job_at FROM dependencies"
    " WHERE check_at < %(before_ms)s LIMIT %(limit)s) AS p"
    " ON d.entity = p.entity AND d.job_id = p.job_id AND d.job_at = p.job_at"
    " ORDER BY d.entity, d.job_id, d.job_at"
)
# {keys}: whole edges (entity, job_id, job_at, on_entity, on_id, on_at) as literals, {at_ms} an
# int literal: no bound value, so that a % in an id is never read as a placeholder.
POSTPONE_EDGES = (
    "UPDATE dependencies SET check_at = {at_ms}"
    " WHERE (entity, job_id, job_at, on_entity, on_id, on_at) IN ({keys})"
)
POSTPONE_EDGES_TO_THEIR_TIME = (
    "UPDATE dependencies SET check_at = LEAST(on_at, {at_ms})"
    " WHERE (entity, job_id, job_at, on_entity, on_id, on_at) IN ({keys})"
)
# {keys}: dependencies (on_entity, on_id, on_at) as literals; through ix_dependencies_on.
CHECK_DEPENDENTS = (
    "UPDATE dependencies SET check_at = {at_ms} WHERE (on_entity, on_id, on_at) IN ({keys})"
)
CHECK_DEPENDENTS_AT_THEIR_TIME = (
    "UPDATE dependencies SET check_at = LEAST(on_at, {at_ms})"
    " WHERE (on_entity, on_id, on_at) IN ({keys})"
)
# {keys}: (entity, job_id, job_at) literals.
REMOVE_EDGES = "DELETE FROM dependencies WHERE (entity, job_id, job_at) IN ({keys})"
COUNT_EDGES = "SELECT COUNT(*) FROM dependencies"


def union_all(part: str | Sequence[str], targets: Sequence[str], **names: str) -> str:
    """`part` once per shard target (or the target's own part, given one each), numbered by
    ``{shard_no}`` (the row's shard in the result), joined by UNION ALL: the ``{parts}`` of a
    statement over several shards, or one itself."""
    parts = [part] * len(targets) if isinstance(part, str) else part
    return " UNION ALL ".join(
        p.format(target=target, shard_no=no, **names)
        for no, (p, target) in enumerate(zip(parts, targets, strict=True))
    )


# -- schedules and blockouts (repos/mysql/schedules.py), beside the nodes table ---------------
# Times are the caller's (the engine's clock), as in the shards. `trigger` is a reserved word.
CREATE_SCHEDULES = """CREATE TABLE IF NOT EXISTS schedules (
    id BIGINT NOT NULL AUTO_INCREMENT,
    name VARCHAR(191) NOT NULL,
    entity VARCHAR(64) NOT NULL,
    trigger_json TEXT NOT NULL,
    template_json MEDIUMTEXT NOT NULL,
    start_ms BIGINT NOT NULL,
    end_ms BIGINT NULL,
    max_runs BIGINT NULL,
    runs BIGINT NOT NULL DEFAULT 0,
    priority SMALLINT NOT NULL DEFAULT 500,
    category VARCHAR(64) NOT NULL DEFAULT '',
    owner VARCHAR(191) NOT NULL DEFAULT '',
    misfire VARCHAR(16) NOT NULL,
    paused TINYINT NOT NULL DEFAULT 0,
    state TINYINT NOT NULL DEFAULT 0,
    next_at_ms BIGINT NULL,
    last_at_ms BIGINT NULL,
    generation INT NOT NULL DEFAULT 0,
    version BIGINT NOT NULL DEFAULT 0,
    created_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY ux_schedules_name (name),
    KEY ix_schedules_due (state, paused, next_at_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
CREATE_BLOCKOUTS = """CREATE TABLE IF NOT EXISTS blockouts (
    id BIGINT NOT NULL AUTO_INCREMENT,
    name VARCHAR(191) NOT NULL,
    scope VARCHAR(16) NOT NULL,
    target VARCHAR(191) NOT NULL DEFAULT '',
    window_json TEXT NOT NULL,
    policy VARCHAR(8) NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY ux_blockouts_name (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
_SCHEDULE_COLUMNS = (
    "id, name, entity, trigger_json, template_json, start_ms, end_ms, max_runs, runs, priority,"
    " category, owner, misfire, paused, state, next_at_ms, last_at_ms, generation, version,"
    " created_at_ms, updated_at_ms"
)
_SCHEDULE_SET = (
    "name = %(name)s, entity = %(entity)s, trigger_json = %(trigger_json)s,"
    " template_json = %(template_json)s, start_ms = %(start_ms)s, end_ms = %(end_ms)s,"
    " max_runs = %(max_runs)s, runs = %(runs)s, priority = %(priority)s,"
    " category = %(category)s, owner = %(owner)s, misfire = %(misfire)s, paused = %(paused)s,"
    " state = %(state)s, next_at_ms = %(next_at_ms)s, last_at_ms = %(last_at_ms)s,"
    " generation = %(generation)s"
)
INSERT_SCHEDULE = (
    "INSERT INTO schedules SET "
    + _SCHEDULE_SET
    + ", version = 0, created_at_ms = %(created_at_ms)s, updated_at_ms = %(updated_at_ms)s"
)
SCHEDULE_BY_ID = "SELECT " + _SCHEDULE_COLUMNS + " FROM schedules WHERE id = %(id)s"
SCHEDULE_BY_NAME = "SELECT " + _SCHEDULE_COLUMNS + " FROM schedules WHERE name = %(name)s"
LIST_SCHEDULES = (
    "SELECT " + _SCHEDULE_COLUMNS + " FROM schedules WHERE id > %(after_id)s"
    " AND (%(entity)s IS NULL OR entity = %(entity)s) ORDER BY id LIMIT %(limit)s"
)
DUE_SCHEDULES = (
    "SELECT " + _SCHEDULE_COLUMNS + " FROM schedules WHERE state = 0 AND paused = 0"
    " AND next_at_ms < %(before_ms)s ORDER BY next_at_ms LIMIT %(limit)s"
)
WAITING_SCHEDULES = (
    "SELECT " + _SCHEDULE_COLUMNS + " FROM schedules WHERE state = 1 AND paused = 0"
    " AND id > %(after_id)s ORDER BY id LIMIT %(limit)s"
)
# A batch of steps in one statement: {rows} is ADVANCE_FIRST_ROW then ADVANCE_ROW per step,
# rendered from ints (repos/mysql/literals.py), joined on id and the version each step read.
ADVANCE_SCHEDULES = (
    "UPDATE schedules AS s JOIN ({rows}) AS v ON s.id = v.id AND s.version = v.version"
    " SET s.state = v.state, s.next_at_ms = v.next_at_ms, s.last_at_ms = v.last_at_ms,"
    " s.runs = v.runs, s.version = s.version + 1, s.updated_at_ms = %(now_ms)s"
)
ADVANCE_FIRST_ROW = (
    "SELECT {id} AS id, {version} AS version, {state} AS state, {next_at_ms} AS next_at_ms,"
    " {last_at_ms} AS last_at_ms, {runs} AS runs"
)
ADVANCE_ROW = "SELECT {id}, {version}, {state}, {next_at_ms}, {last_at_ms}, {runs}"
REPLACE_SCHEDULE = (
    "UPDATE schedules SET "
    + _SCHEDULE_SET
    + ", version = version + 1, updated_at_ms = %(updated_at_ms)s"
    " WHERE id = %(id)s AND version = %(version)s"
)
DELETE_SCHEDULE = "DELETE FROM schedules WHERE id = %(id)s"
INSERT_BLOCKOUT = (
    "INSERT INTO blockouts (name, scope, target, window_json, policy, created_at_ms)"
    " VALUES (%(name)s, %(scope)s, %(target)s, %(window_json)s, %(policy)s, %(created_at_ms)s)"
)
LIST_BLOCKOUTS = (
    "SELECT id, name, scope, target, window_json, policy, created_at_ms FROM blockouts ORDER BY id"
)
DELETE_BLOCKOUT = "DELETE FROM blockouts WHERE name = %(name)s"
# Categories paused store-wide (one row each while paused): every node reads them each heartbeat.
CREATE_CATEGORY_PAUSES = """CREATE TABLE IF NOT EXISTS category_pauses (
    name VARCHAR(64) NOT NULL,
    paused_at_ms BIGINT NOT NULL,
    PRIMARY KEY (name)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
# A pause of a paused category keeps the first pause's time.
PAUSE_CATEGORY = (
    "INSERT INTO category_pauses (name, paused_at_ms) VALUES (%(name)s, %(now_ms)s)"
    " ON DUPLICATE KEY UPDATE name = name"
)
RESUME_CATEGORY = "DELETE FROM category_pauses WHERE name = %(name)s"
PAUSED_CATEGORIES = "SELECT name, paused_at_ms FROM category_pauses ORDER BY name"


def advance_rows(steps: Sequence[Mapping[str, str]]) -> str:
    """The ``{rows}`` of ADVANCE_SCHEDULES: one row of literals per schedule step."""
    return " UNION ALL ".join(
        (ADVANCE_ROW if i else ADVANCE_FIRST_ROW).format(**values) for i, values in enumerate(steps)
    )


# -- API tokens and the audit log (repos/mysql/access.py), beside the nodes table -------------
CREATE_API_TOKENS = """CREATE TABLE IF NOT EXISTS api_tokens (
    id BIGINT NOT NULL AUTO_INCREMENT,
    name VARCHAR(64) NOT NULL,
    role VARCHAR(16) NOT NULL,
    owner VARCHAR(191) NOT NULL DEFAULT '',
    secret_hash CHAR(64) NOT NULL,
    created_at_ms BIGINT NOT NULL,
    revoked_at_ms BIGINT NULL,
    PRIMARY KEY (id),
    UNIQUE KEY ux_api_tokens_name (name),
    UNIQUE KEY ux_api_tokens_hash (secret_hash)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
CREATE_AUDIT_LOG = """CREATE TABLE IF NOT EXISTS audit_log (
    id BIGINT NOT NULL AUTO_INCREMENT,
    at_ms BIGINT NOT NULL,
    actor VARCHAR(64) NOT NULL,
    action VARCHAR(64) NOT NULL,
    target VARCHAR(255) NOT NULL,
    before_json MEDIUMTEXT NULL,
    after_json MEDIUMTEXT NULL,
    request_id VARCHAR(64) NOT NULL DEFAULT '',
    PRIMARY KEY (id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
_TOKEN_COLUMNS = "id, name, role, owner, secret_hash, created_at_ms, revoked_at_ms"
INSERT_TOKEN = (
    "INSERT INTO api_tokens (name, role, owner, secret_hash, created_at_ms)"
    " VALUES (%(name)s, %(role)s, %(owner)s, %(secret_hash)s, %(created_at_ms)s)"
)
TOKEN_BY_ID = "SELECT " + _TOKEN_COLUMNS + " FROM api_tokens WHERE id = %(id)s"
TOKEN_BY_HASH = "SELECT " + _TOKEN_COLUMNS + " FROM api_tokens WHERE secret_hash = %(secret_hash)s"
LIST_TOKENS = "SELECT " + _TOKEN_COLUMNS + " FROM api_tokens ORDER BY id"
REVOKE_TOKEN = (
    "UPDATE api_tokens SET revoked_at_ms = %(now_ms)s"
    " WHERE name = %(name)s AND revoked_at_ms IS NULL"
)
COUNT_LIVE_TOKENS = "SELECT COUNT(*) FROM api_tokens WHERE revoked_at_ms IS NULL"
PING_TOKENS = "SELECT 1 FROM api_tokens LIMIT 1"
_AUDIT_COLUMNS = "id, at_ms, actor, action, target, before_json, after_json, request_id"
INSERT_AUDIT = (
    "INSERT INTO audit_log (at_ms, actor, action, target, before_json, after_json, request_id)"
    " VALUES (%(at_ms)s, %(actor)s, %(action)s, %(target)s, %(before_json)s, %(after_json)s,"
    " %(request_id)s)"
)
AUDIT_BY_ID = "SELECT " + _AUDIT_COLUMNS + " FROM audit_log WHERE id = %(id)s"
AUDIT_PAGE = (
    "SELECT " + _AUDIT_COLUMNS + " FROM audit_log"
    " WHERE %(before_id)s IS NULL OR id < %(before_id)s ORDER BY id DESC LIMIT %(limit)s"
)


# -- execution history (repos/history.py, repos/mysql/history.py): a table per UTC day -------
# Clustered by the attempt's end (appended in time order: the cheapest insert), then which
# attempt; ix_history_job finds a job's attempts. Ids as text, compared byte for byte as the
# shards' are. fired_at 0: never fired. The error is bounded (repos/history.py).
CREATE_HISTORY = """CREATE TABLE IF NOT EXISTS `{table}` (
    finished_at BIGINT NOT NULL,
    entity VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    job_id VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
    job_at BIGINT NOT NULL,
    attempt INT NOT NULL,
    node VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
    category VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
    due_at BIGINT NOT NULL,
    fired_at BIGINT NOT NULL,
    outcome TINYINT NOT NULL,
    error VARCHAR(1000) NULL,
    PRIMARY KEY (finished_at, entity, job_id, job_at, attempt),
    KEY ix_history_job (entity, job_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4"""
# {columns}, {rows}: literals (repos/mysql/history.py; category and error left out when every
# row has the default). A repeat of a row already there (a flush written twice in one
# millisecond of a fake clock) changes nothing.


def _insert_history(category: bool, error: bool) -> str:
    columns = "entity, job_id, job_at, attempt, node" + (", category" if category else "")
    columns += ", due_at, fired_at, finished_at, outcome" + (", error" if error else "")
    return (
        f"INSERT INTO `{{table}}` ({columns}) VALUES {{rows}}"
        " ON DUPLICATE KEY UPDATE attempt = attempt"
    )


#: By (any row with a category, any with an error): an INSERT leaves out the columns whose
#: rows all have the default.
INSERT_HISTORY = {(c, e): _insert_history(c, e) for c in (False, True) for e in (False, True)}
# After an ack that changed fewer rows than it named: the rows it did mark DONE.
DONE_BY_THIS_ACK = """
SELECT `{id}`, `{at}` FROM {target}
WHERE claim_epoch = %(epoch)s AND status = 2 AND fired_at = %(fired_at_ms)s AND `{id}` IN ({keys})"""
_HISTORY_COLUMNS = (
    "entity, job_id, job_at, attempt, node, category, due_at, fired_at, finished_at, outcome, error"
)
HISTORY_OF_JOB = (
    "SELECT " + _HISTORY_COLUMNS + " FROM `{table}` WHERE entity = %(entity)s"
    " AND job_id = %(job_id)s ORDER BY finished_at DESC, job_at DESC, attempt DESC LIMIT %(limit)s"
)
# Newest first; keyset after a cursor (the page order's key, all descending).
HISTORY_PAGE = (
    "SELECT " + _HISTORY_COLUMNS + " FROM `{table}`"
    " WHERE (%(entity)s IS NULL OR entity = %(entity)s)"
    " AND (%(outcome)s IS NULL OR outcome = %(outcome)s)"
    " AND (%(start_ms)s IS NULL OR finished_at >= %(start_ms)s)"
    " AND (%(end_ms)s IS NULL OR finished_at < %(end_ms)s)"
    " AND (%(after_finished)s IS NULL OR (finished_at, entity, job_id, job_at, attempt)"
    " < (%(after_finished)s, %(after_entity)s, %(after_job_id)s, %(after_at)s, %(after_attempt)s))"
    " ORDER BY finished_at DESC, entity DESC, job_id DESC, job_at DESC, attempt DESC"
    " LIMIT %(limit)s"
)
_HISTORY_WINDOW = (
    " WHERE finished_at >= %(start_ms)s AND finished_at < %(end_ms)s"
    " AND (%(entity)s IS NULL OR entity = %(entity)s)"
    " AND (%(category)s IS NULL OR category = %(category)s)"
)
# The SLA's counts, in the store: one row per entity, category and outcome.
HISTORY_SLA_COUNTS = (
    "SELECT entity, category, outcome, COUNT(*),"
    " SUM(fired_at > 0 AND fired_at - due_at > %(late_ms)s) FROM `{table}`"
    + _HISTORY_WINDOW
    + " GROUP BY entity, category, outcome"
)
HISTORY_SLA_SAMPLE = (
    "SELECT entity, category, fired_at - due_at, finished_at - fired_at FROM `{table}`"
    + _HISTORY_WINDOW
    + " AND fired_at > 0 ORDER BY finished_at DESC LIMIT %(limit)s"
)
