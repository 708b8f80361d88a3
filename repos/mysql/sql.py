"""Every SQL statement of the MySQL adapters, as named templates.

Placeholders in braces are identifiers only, and only ones that passed
``repos.shards.check_identifier``: ``{target}`` is a shard (a table, or a table with a
PARTITION clause), ``{id}`` and ``{at}`` the entity's id and sharding-time columns. Values are
``%s`` parameters bound by the driver, except the ``{rows}`` of INSERT and the ``{keys}`` of
``IN (...)`` lists, which repos/mysql/literals.py binds (type-checked, digits and hex only).
"""

from __future__ import annotations

# The claim and ack columns are fixed-width and NOT NULL, so that claiming and acking rewrite a
# row in place: a NULL turning into a value grows the record, and InnoDB then deletes and
# re-inserts it (measured on the bare driver: 11k -> 20-27k rows/s through select+claim+ack).
# Reads turn the '' and 0 of "not yet" back into NULL (ROW_COLUMNS). Node ids are ASCII, at
# most 64 characters (the config's own rule).
COLUMNS = """
    `{id}` {id_type} NOT NULL,
    `{at}` BIGINT NOT NULL,
    payload MEDIUMBLOB NOT NULL,
    status TINYINT NOT NULL,
    due_at BIGINT NOT NULL,
    attempts INT NOT NULL,
    claimed_by CHAR(64) CHARACTER SET ascii NOT NULL DEFAULT '',
    claimed_at BIGINT NOT NULL DEFAULT 0,
    fired_at BIGINT NOT NULL DEFAULT 0,
    last_error TEXT NULL"""

# `store init` (or store.create_missing): the database itself; the engine makes the tables.
# Looked up first: IF NOT EXISTS on an existing one makes the drivers emit a Python warning.
DATABASE_EXISTS = "SELECT 1 FROM information_schema.schemata WHERE schema_name = %s"
CREATE_DATABASE = "CREATE DATABASE IF NOT EXISTS `{database}` CHARACTER SET utf8mb4"
# Read at open: a statement longer than this breaks the connection ("Packet sequence number
# wrong"), so payloads are capped below it (repos.mysql.adapter.payload_limits).
MAX_ALLOWED_PACKET = "SELECT @@max_allowed_packet"

CREATE_SHARD_TABLE = (
    "CREATE TABLE IF NOT EXISTS `{table}` ("
    + COLUMNS
    + """,
    PRIMARY KEY (`{id}`),
    KEY ix_status_due (status, due_at)
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
    KEY ix_status_due (status, due_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4
PARTITION BY RANGE (shard_at) ({partitions})"""
)

PARTITION_DEF = "PARTITION `{name}` VALUES LESS THAN ({end_ms})"
ADD_PARTITIONS = "ALTER TABLE `{table}` ADD PARTITION ({partitions})"
DROP_PARTITION = "ALTER TABLE `{table}` DROP PARTITION `{name}`"
DROP_TABLE = "DROP TABLE IF EXISTS `{table}`"

LIST_TABLES = """
SELECT table_name FROM information_schema.tables
WHERE table_schema = DATABASE() AND table_name LIKE %s"""

LIST_PARTITIONS = """
SELECT partition_name FROM information_schema.partitions
WHERE table_schema = DATABASE() AND table_name = %s AND partition_name IS NOT NULL
ORDER BY partition_ordinal_position"""

INSERT = "INSERT INTO {target} (`{id}`, `{at}`, payload, status, due_at, attempts, claimed_by, claimed_at{extra_columns}) VALUES {rows}"
ON_DUPLICATE_IGNORE = " ON DUPLICATE KEY UPDATE `{id}` = `{id}`"

EXISTING_IDS = "SELECT `{id}` FROM {target} WHERE `{id}` IN ({keys})"

# One subselect per shard, glued with UNION ALL: a window spanning shards is one statement.
# The payload only for rows due before the first parameter: the rest are read nearly due.
CLAIM_SELECT_PART = """(SELECT `{id}`, `{at}`, due_at, attempts, IF(due_at < %s, payload, NULL),
 {shard_no} AS shard_no
 FROM {target} WHERE status = 0 AND due_at < %s ORDER BY due_at LIMIT %s FOR UPDATE SKIP LOCKED)"""
CLAIM_SELECT_TAIL = " ORDER BY due_at LIMIT %s"

READ_PAYLOADS = """
SELECT `{id}`, `{at}`, payload FROM {target}
WHERE status = 1 AND claimed_by = %s AND `{id}` IN ({keys})"""

CLAIM_UPDATE = """
UPDATE {target} SET status = 1, claimed_by = %s, claimed_at = %s, attempts = attempts + 1
WHERE `{id}` IN ({keys})"""

MARK_DONE = """
UPDATE {target} SET status = 2, fired_at = %s
WHERE status = 1 AND claimed_by = %s AND `{id}` IN ({keys})"""

MARK_FAILED = """
UPDATE {target} SET status = %s, due_at = COALESCE(%s, due_at), last_error = %s, fired_at = %s
WHERE status = 1 AND claimed_by = %s AND `{id}` = %s"""

# {where} narrows it down: repos.statements.release_statement.
RELEASE = """
UPDATE {target} SET status = 0, claimed_by = '', claimed_at = 0,
    attempts = GREATEST(attempts - 1, 0)
WHERE status = 1{where}"""
RELEASE_KEYS = " AND `{id}` IN ({keys})"

CANCEL = "UPDATE {target} SET status = 4 WHERE status IN (0, 1) AND `{id}` IN ({keys})"

ROW_COLUMNS = (
    "`{id}`, `{at}`, status, due_at, attempts, NULLIF(claimed_by, ''), NULLIF(claimed_at, 0),"
    " NULLIF(fired_at, 0), last_error, payload"
)
GET_PART = "(SELECT " + ROW_COLUMNS + ", {shard_no} AS shard_no FROM {target} WHERE `{id}` = %s)"
GET_TAIL = " ORDER BY `{at}`"

PAGE_PART = (
    "(SELECT " + ROW_COLUMNS + ", {shard_no} AS shard_no FROM {target}"
    " WHERE `{at}` >= %s AND `{at}` < %s{filters} ORDER BY `{at}`, `{id}` LIMIT %s)"
)
PAGE_AFTER = " AND (`{at}` > %s OR (`{at}` = %s AND `{id}` > %s))"
PAGE_STATUS = " AND status = %s"
PAGE_TAIL = " ORDER BY `{at}`, `{id}` LIMIT %s"

COUNT_PART = "(SELECT {shard_no} AS shard_no, status, COUNT(*) FROM {target} GROUP BY status)"

# Two ranges of the (status, due_at) index, bound to repos.base.STATUS_RANGE; the count is of
# every such row of the shard, the LIMIT only cuts the ids listed.
UNKNOWN_STATUS_PART = """(SELECT {shard_no} AS shard_no, `{id}`, status, COUNT(*) OVER ()
 FROM {target} WHERE status < %s OR status > %s ORDER BY `{id}` LIMIT %s)"""
