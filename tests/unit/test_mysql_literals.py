"""The MySQL adapter's literals: only digits and hex digits of our making reach a statement."""

from __future__ import annotations

import re

import pytest

from repos.entity import PAYLOAD_BYTES_CEILING, EncodedBatch, EncodedRow
from repos.mysql import sql
from repos.mysql.literals import (
    MAX_INSERT_PAYLOAD_BYTES,
    ROW_OVERHEAD,
    STATEMENT_OVERHEAD,
    insert_values,
    keeps_json_text,
    key_literal,
    literal,
    literal_list,
    payload_limits,
    with_document,
)

SAFE = re.compile(r"NULL|-?[0-9]+|X'[0-9a-f]*'|_utf8mb4 X'[0-9a-f]*'")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, "NULL"),
        (0, "0"),
        (-42, "-42"),
        (2**63 - 1, "9223372036854775807"),
        (b"", "X''"),
        (b"'\\\x00%", "X'275c0025'"),
        ("", "_utf8mb4 X''"),
        ("it's ü", "_utf8mb4 X'6974277320c3bc'"),
    ],
)
def test_values_render_as_digits_or_hex(value: int | bytes | str | None, expected: str) -> None:
    assert literal(value) == expected
    assert SAFE.fullmatch(expected)


def test_key_lists_render_per_key_type() -> None:
    assert literal_list(key_literal(int), [1, 22, 333]) == "1,22,333"
    assert literal_list(key_literal(str), ["a", "%"]) == "_utf8mb4 X'61',_utf8mb4 X'25'"


@pytest.mark.parametrize(
    ("key_type", "bad"),
    [(int, "1; DROP TABLE sms"), (int, True), (int, 1.5), (str, 7), (str, b"x")],
)
def test_a_key_of_the_wrong_type_is_refused_not_rendered(key_type: type, bad: object) -> None:
    with pytest.raises(TypeError, match=f"expected an? {key_type.__name__} id"):
        key_literal(key_type)(bad)


def test_a_str_subclass_id_renders_as_its_text() -> None:
    class Code(str):
        pass

    assert key_literal(str)(Code("ab")) == "_utf8mb4 X'6162'"


@pytest.mark.parametrize("packet", [1 << 20, 4 << 20, 16 << 20, 64 << 20, 1 << 30])
@pytest.mark.parametrize("batch_size", [1, 1000, 5000])
def test_payload_limits_keep_every_insert_under_the_servers_packet(
    packet: int, batch_size: int
) -> None:
    row_bytes, insert_bytes = payload_limits(packet, batch_size)
    longest_str_id = key_literal(str)("\U0001f600" * 191)  # 4 bytes a character in utf8mb4
    assert len(longest_str_id) + 200 <= ROW_OVERHEAD  # the row's other values, generously
    # One row at the cap alone, or a full batch at the statement budget: both fit.
    assert STATEMENT_OVERHEAD + ROW_OVERHEAD + 2 * row_bytes <= packet
    assert STATEMENT_OVERHEAD + batch_size * ROW_OVERHEAD + 2 * insert_bytes <= packet or (
        insert_bytes == 1
    )
    assert row_bytes <= PAYLOAD_BYTES_CEILING and insert_bytes <= MAX_INSERT_PAYLOAD_BYTES


def test_insert_values_render_each_row_as_literals_then_the_tail() -> None:
    rows = EncodedBatch.of_rows([EncodedRow(7, 1000, b'{"a":1}'), EncodedRow(-2, 2000, b"'")])
    assert insert_values(rows, key_literal(int), 0, ",0,'',0", "") == (
        "(7,1000,X'7b2261223a317d',0,1000,0,'',0,500,''),(-2,2000,X'27',0,2000,0,'',0,500,'')"
    )
    named = EncodedBatch.of_rows([EncodedRow("it's", 5, b"")])
    assert (
        insert_values(named, key_literal(str), 1, "", ",9")
        == "(_utf8mb4 X'69742773',5,X'',1,5,500,'',9)"
    )
    assert insert_values(EncodedBatch([], [], []), key_literal(int), 0, "", "") == ""


def test_insert_values_render_each_rows_priority_and_category() -> None:
    rows = EncodedBatch.of_rows([EncodedRow(7, 1, b"", 900, "reports"), EncodedRow(8, 2, b"")])
    assert insert_values(rows, key_literal(int), 0, ",0", ",5") == (
        "(7,1,X'',0,1,0,900,_utf8mb4 X'7265706f727473',5),(8,2,X'',0,2,0,500,'',5)"
    )


@pytest.mark.parametrize("bad", [True, "1; DROP TABLE sms", 1.5])
def test_insert_values_refuse_an_id_of_the_wrong_type(bad: object) -> None:
    rows = EncodedBatch([1, bad], [5, 5], [b"", b""])  # type: ignore[list-item]
    with pytest.raises(TypeError, match="expected an int id"):
        insert_values(rows, key_literal(int), 0, "", "")


@pytest.mark.parametrize("bad", [True, "1); DROP TABLE sms; --", 1.5])
def test_insert_values_refuse_a_sharding_time_that_is_not_an_int(bad: object) -> None:
    rows = EncodedBatch([1, 2], [5, bad], [b"", b""])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        insert_values(rows, key_literal(int), 0, "", "")


@pytest.mark.parametrize("layout", ["error", "ignore"])
def test_a_document_insert_is_its_template_with_the_document_as_one_hex_literal(
    layout: str,
) -> None:
    document = '[[7,1000,{"m":"it\'s \\\\ \\" ünï 🎉 {rows}"}]]'.encode()
    template = {"error": sql.INSERT_DOCUMENT, "ignore": sql.INSERT_DOCUMENT_IGNORE}[layout]
    fields = {"target": "`sms_x`", "state": "0,0,0,'',0,500,''", "id": "id", "at": "at"}
    statement = with_document(template, document, id_type="BIGINT", **fields)
    literal = f"_utf8mb4 X'{document.hex()}'"
    assert statement == template.format(rows=literal, id_type="BIGINT", **fields).encode()
    assert statement.count(b"X'") == 1 and b"{" not in statement  # the document's own, in hex


@pytest.mark.parametrize(
    ("version", "documents"),
    [
        ("10.11.19-MariaDB-0+deb12u1", True),
        ("5.5.5-10.6.12-MariaDB-log", True),  # as some proxies report MariaDB
        ("8.0.36", False),
        ("8.0.28-google", False),
        ("8.0.mysql_aurora.3.05.2", False),
        ("8.4.0-Percona Server", False),
    ],
)
def test_documents_are_inserted_on_mariadb_only(version: str, documents: bool) -> None:
    """MySQL's JSON_TABLE writes a JSON column out again (spaces, keys reordered): a payload
    inserted from a document would not be the bytes encoded, so MySQL keeps VALUES."""
    assert keeps_json_text(version) is documents
