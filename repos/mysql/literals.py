"""SQL literals for the values the MySQL adapter writes in bulk: ids, times and payloads.

The drivers escape arguments in Python, one call per value: a 1,000-row INSERT is 8,000 calls,
and on the bare driver that cost the client as much CPU as the server spent inserting (1.24 s
of client CPU per 100,000 rows; 0.25 s rendered as here). Only digits and hex digits of our own
making reach the statement, so no value, whatever its bytes, can end a literal early.
"""

from __future__ import annotations

from binascii import hexlify
from collections.abc import Callable, Iterable
from typing import Any

from repos.entity import PAYLOAD_BYTES_CEILING, EncodedBatch
from repos.options import DEFAULT_PRIORITY
from repos.server_guard import ServerIdentity

KeyLiteral = Callable[[Any], str]
#: Payload bytes in one INSERT at most: rendered as hex they double, and the statement must
#: stay under the server's max_allowed_packet (16 MiB by default; lower ones lower this too).
MAX_INSERT_PAYLOAD_BYTES = 4 * 1024 * 1024
#: Bytes of an INSERT besides its payload literals: the statement's own text, and per row the
#: other values (a str id of 191 characters alone is up to 1,540 bytes as a hex literal).
STATEMENT_OVERHEAD = 64 * 1024
ROW_OVERHEAD = 2 * 1024


def int_literal(value: int) -> str:
    if type(value) is not int:
        raise TypeError(f"expected an int id, got {type(value).__name__} {value!r}")
    return str(value)


def bytes_literal(value: bytes) -> str:
    return f"X'{value.hex()}'"


def str_literal(value: str) -> str:
    if not isinstance(value, str):  # a str subclass (StrEnum) is text too
        raise TypeError(f"expected a str id, got {type(value).__name__} {value!r}")
    return f"_utf8mb4 X'{value.encode().hex()}'"


def literal(value: int | bytes | str | None) -> str:
    """Any single value the adapter renders: NULL, an int, bytes or text."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return bytes_literal(value)
    if isinstance(value, str):
        return str_literal(value)
    return int_literal(value)


def key_literal(key_type: type) -> KeyLiteral:
    """The renderer for an entity's ids: ints as digits, strings as utf8mb4 hex."""
    return int_literal if key_type is int else str_literal


def literal_list(render: KeyLiteral, keys: Iterable[Any]) -> str:
    """The inside of an ``IN (...)`` list."""
    return ",".join(map(render, keys))


def insert_values(rows: EncodedBatch, key: KeyLiteral, status: int, state: str, extra: str) -> str:
    """The rows of an INSERT's VALUES: ``(id,at,payload,status,due_at`` then `state` (the claim
    columns, the same for every row), the row's priority and category, and `extra` (the
    layout's columns); all literals.

    The ids are rendered by `key`, or checked all at once when they are ints (a bool or any
    other type then goes through `key`, which refuses it): an int renders as its digits, as
    does a sharding time (which must be an int). A column at a time, joined once: a Python
    step per row cost as much as the rest of the insert's client work. A batch with the
    default priority and no category throughout (rows.priorities None) has one tail for all.
    """
    n = len(rows.keys)
    if not n:
        return ""
    if key is int_literal and set(map(type, rows.keys)) <= {int}:
        keys = list(map(int.__repr__, rows.keys))
    else:
        keys = list(map(key, rows.keys))
    if not set(map(type, rows.at_ms)) <= {int}:
        raise TypeError("expected int sharding times")
    ats = list(map(int.__repr__, rows.at_ms))  # in twice: due_at is the sharding time too
    parts = ["("] * (8 * n + 1)  # "(", then 8 parts a row, the last closing the next "("
    parts[1::8] = keys
    parts[2::8] = [","] * n
    parts[3::8] = ats
    parts[4::8] = [",X'"] * n
    parts[5::8] = map(bytes.hex, rows.payloads)
    parts[6::8] = [f"',{int(status)},"] * n
    parts[7::8] = ats
    if rows.priorities is None or rows.categories is None:
        tail = _with_default_options(state, extra) + ")"
        parts[8::8] = [tail + ",("] * n
        parts[-1] = tail
    else:
        tails = [
            f"{state},{int_literal(p)},{str_literal(c) if c else _EMPTY}{extra}),("
            for p, c in zip(rows.priorities, rows.categories, strict=True)
        ]
        tails[-1] = tails[-1][:-2]
        parts[8::8] = tails
    return "".join(parts)


def keeps_json_text(version: str) -> bool:
    """Whether a server of this VERSION() stores a JSON_TABLE column of type JSON as the text it
    was given (MariaDB), so that a payload inserted from a document is its bytes as encoded.
    MySQL keeps JSON as binary and writes it out again: spaces added, keys reordered."""
    return ServerIdentity(version=version).flavor == "MariaDB"


def with_document(template: str, document: bytes, **fields: str) -> bytes:
    """`template` (sql.INSERT_DOCUMENT's kind) with its {rows} an EncodedBatch's document as one
    utf8mb4 text literal, hex so that no byte of it can end the literal whatever the server's
    sql_mode says of backslashes; the statement as bytes. A 1,000-row document is ~160 KB of
    hex digits: as a str they were copied twice more, formatted in, then encoded by the driver,
    each copy into memory fresh from the allocator (benchmarks/RESULTS.md, "W1 from one
    document")."""
    head, tail = template.split("{rows}")
    return b"".join(
        (
            head.format(**fields).encode(),
            b"_utf8mb4 X'",
            hexlify(document),
            b"'",
            tail.format(**fields).encode(),
        )
    )


def shared_columns(status: int, state: str, extra: str) -> str:
    """The columns every row of an INSERT from a document shares (sql.INSERT_DOCUMENT's
    {state}): status, then `state` (the claim columns, as insert_values takes them), the
    default priority, no category, and `extra` (the layout's columns)."""
    return f"{int(status)}{_with_default_options(state, extra)}"


def _with_default_options(state: str, extra: str) -> str:
    """`state` (the claim columns), the default priority, no category, then `extra`."""
    return f"{state},{DEFAULT_PRIORITY},''{extra}"


def tuple_literal(values: Iterable[int | str]) -> str:
    """A row of literals, ``(a,b,...)``: an edge of the dependencies table, or a job's key."""
    return "(" + ",".join(map(literal, values)) + ")"


_EMPTY = "''"


def payload_limits(max_allowed_packet: int, batch_size: int) -> tuple[int, int]:
    """(largest payload one row may carry, payload bytes one INSERT may carry) on a server that
    takes statements of up to `max_allowed_packet` bytes, with payloads as hex literals."""
    room = max_allowed_packet - STATEMENT_OVERHEAD
    row_bytes = min(PAYLOAD_BYTES_CEILING, (room - ROW_OVERHEAD) // 2)
    insert_bytes = min(MAX_INSERT_PAYLOAD_BYTES, (room - batch_size * ROW_OVERHEAD) // 2)
    return max(row_bytes, 1), max(insert_bytes, 1)
