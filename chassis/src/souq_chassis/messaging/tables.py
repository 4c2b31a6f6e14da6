"""The outbox and inbox tables every messaging service has in its own database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
)


def _outbox_columns() -> list[Any]:
    return [
        Column("seq", Integer, primary_key=True, autoincrement=True),
        Column("id", String(32), nullable=False, unique=True),
        Column("type", String(120), nullable=False),
        Column("body", LargeBinary, nullable=False),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("published_at", DateTime(timezone=True), nullable=True, index=True),
    ]


def _inbox_columns() -> list[Any]:
    return [
        Column("consumer", String(80), primary_key=True),
        Column("message_id", String(32), primary_key=True),
        Column("handled_at", DateTime(timezone=True), nullable=False),
        Column("attempt", BigInteger, nullable=False),
    ]


def outbox_table(metadata: MetaData) -> Table:
    return Table("outbox", metadata, *_outbox_columns())


def inbox_table(metadata: MetaData) -> Table:
    return Table("inbox", metadata, *_inbox_columns())


def create_outbox(op: Any) -> None:
    """In a service's Alembic migration: `create_outbox(op)`."""
    op.create_table("outbox", *_outbox_columns())


def create_inbox(op: Any) -> None:
    """In a service's Alembic migration: `create_inbox(op)`."""
    op.create_table("inbox", *_inbox_columns())
