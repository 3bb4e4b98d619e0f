"""Row ids for bulk inserts, handed out before the rows are written.

An INSERT of many rows that must say which id each row got (RETURNING, in the rows'
order) runs one statement per row on SQLite, which cannot promise the order of a
multi-row RETURNING: the bulk writers (a batch of saved mail, of imported history)
take their ids first and insert the rows with them, in one executemany or COPY.
"""
from __future__ import annotations

from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection

_NEXT_VALUES = text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
                    "FROM generate_series(1, :count)")


def allocate_ids(connection: Connection, table, count: int) -> list[int]:
    """COUNT new ids of TABLE (its integer primary key `id`), ascending, on CONNECTION's
    transaction."""
    if count <= 0:
        return []
    if connection.dialect.name == "postgresql":  # the column's own sequence: never given twice
        return sorted(connection.scalars(_NEXT_VALUES, {"table": table.name, "count": count}))
    # SQLite: the writing transaction holds the database's write lock from its BEGIN
    # IMMEDIATE to its end, so nobody else can take these ids before the rows are in;
    # a rowid table gives the next row max(id) + 1 the same way.
    last = connection.scalar(select(func.max(table.c.id))) or 0
    return list(range(last + 1, last + count + 1))
