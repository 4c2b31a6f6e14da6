"""A service's database (SQLite locally, PostgreSQL in production) and its Alembic migrations."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Executable, Result, Row, event, text
from sqlalchemy import create_engine as sa_create_engine
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.schema import MetaData

from souq_chassis.private_files import PRIVATE_FILE, private_dir, private_files

Params = Mapping[str, Any] | Sequence[Mapping[str, Any]] | None


def _is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def _prepare_sqlite_file(url: str) -> None:
    """The database's directory made private (0700), the file and its journals tightened to
    0600 if an earlier run left them open; new ones are made 0600 (SQLite gives the journals
    the database file's mode)."""
    database = make_url(url).database
    if database and database != ":memory:":
        path = Path(database)
        private_dir(path.parent)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, PRIVATE_FILE))
        private_files(path.with_name(path.name + end) for end in _SQLITE_FILES)


_SQLITE_FILES = ("", "-wal", "-shm", "-journal")


def _sqlite_pragmas(dbapi_connection: Any, _: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    # What a row held before it was changed or deleted (a key before it was sealed, a revoked
    # token) is overwritten, not left in the file's free space.
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


class Transaction:
    """Statements inside one database transaction."""

    def after_commit(self, callback: Callable[[], object]) -> None:
        """Call `callback` once this transaction has committed (never if it rolls back)."""
        raise NotImplementedError

    def savepoint(self) -> AbstractAsyncContextManager[None]:
        """A nested transaction: an exception in the block undoes the block alone."""
        raise NotImplementedError

    async def execute(self, statement: Executable, params: Params = None) -> Result[Any]:
        raise NotImplementedError

    async def one(self, statement: Executable, params: Params = None) -> Row[Any] | None:
        return (await self.execute(statement, params)).first()

    async def all(self, statement: Executable, params: Params = None) -> Sequence[Row[Any]]:
        return (await self.execute(statement, params)).all()

    async def scalar(self, statement: Executable, params: Params = None) -> Any:
        return (await self.execute(statement, params)).scalar()


class Database(Transaction):
    """A service's database: single statements, or several in `transaction()`.

    Build statements once (module constants with `bindparam`): building a `select()` costs more
    than running it.
    """

    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        raise NotImplementedError

    async def ping(self) -> None:
        """Readiness: the database answers."""
        await self.scalar(_PING)

    async def dispose(self) -> None:
        raise NotImplementedError


_PING = text("SELECT 1")


class _Hooks:
    def __init__(self) -> None:
        self.callbacks: list[Callable[[], object]] = []

    def after_commit(self, callback: Callable[[], object]) -> None:
        self.callbacks.append(callback)

    def committed(self) -> None:
        for callback in self.callbacks:
            callback()


class _SyncTransaction(_Hooks, Transaction):
    def __init__(self, connection: Connection) -> None:
        super().__init__()
        self._connection = connection

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        self._connection.exec_driver_sql("SAVEPOINT souq_sp")
        try:
            yield
        except BaseException:
            self._connection.exec_driver_sql("ROLLBACK TO souq_sp")
            self._connection.exec_driver_sql("RELEASE souq_sp")
            raise
        self._connection.exec_driver_sql("RELEASE souq_sp")

    async def execute(self, statement: Executable, params: Params = None) -> Result[Any]:
        return self._connection.execute(statement, params)


class SqliteDatabase(Database):
    """SQLite, run in the event loop thread on two persistent connections.

    A point read takes ~15 µs in SQLite; handing it to a worker thread (aiosqlite) costs
    ~100 µs per hop and several hops per query, so inline is ~10x cheaper. Reads use an
    autocommit connection (each sees the latest commit, WAL lets them run beside a writer).
    Writes are serialized by an asyncio lock, as SQLite serializes them anyway, and run in
    `BEGIN IMMEDIATE` so a transaction never fails half-way on a lock upgrade.
    """

    def __init__(self, url: str, tracer_provider: Any = None) -> None:
        _prepare_sqlite_file(url)
        sync_url = make_url(url).set(drivername="sqlite")
        self.engine = sa_create_engine(sync_url, poolclass=NullPool, hide_parameters=True)
        event.listen(self.engine, "connect", _sqlite_pragmas)
        _instrument(self.engine, tracer_provider)
        autocommit = {"isolation_level": "AUTOCOMMIT"}
        self._reader = self.engine.connect().execution_options(**autocommit)
        self._writer = self.engine.connect().execution_options(**autocommit)
        self._write_lock = asyncio.Lock()

    async def execute(self, statement: Executable, params: Params = None) -> Result[Any]:
        return self._reader.execute(statement, params)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self._write_lock:
            writer = self._writer
            writer.exec_driver_sql("BEGIN IMMEDIATE")
            tx = _SyncTransaction(writer)
            try:
                yield tx
            except BaseException:
                writer.exec_driver_sql("ROLLBACK")
                raise
            writer.exec_driver_sql("COMMIT")
        tx.committed()

    async def dispose(self) -> None:
        self._reader.close()
        self._writer.close()
        self.engine.dispose()


class _AsyncTransaction(_Hooks, Transaction):
    def __init__(self, connection: AsyncConnection) -> None:
        super().__init__()
        self._connection = connection

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        async with self._connection.begin_nested():
            yield

    async def execute(self, statement: Executable, params: Params = None) -> Result[Any]:
        return await self._connection.execute(statement, params)


class ServerDatabase(Database):
    """A database server (PostgreSQL through asyncpg) on SQLAlchemy's async engine and pool."""

    def __init__(self, url: str, tracer_provider: Any = None, pool_size: int = 10) -> None:
        self.engine = create_async_engine(
            url, pool_size=pool_size, max_overflow=pool_size, hide_parameters=True
        )
        _instrument(self.engine.sync_engine, tracer_provider)

    async def execute(self, statement: Executable, params: Params = None) -> Result[Any]:
        async with self.engine.connect() as connection:
            result = await connection.execute(statement, params)
            return result.freeze()()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        async with self.engine.begin() as connection:
            tx = _AsyncTransaction(connection)
            yield tx
        tx.committed()

    async def dispose(self) -> None:
        await self.engine.dispose()


def open_database(url: str, *, tracer_provider: Any = None) -> Database:
    """The Database for a URL: `sqlite+aiosqlite:///file.db` or `postgresql+asyncpg://...`."""
    if _is_sqlite(url):
        return SqliteDatabase(url, tracer_provider)
    return ServerDatabase(url, tracer_provider)


def _instrument(engine: Engine, tracer_provider: Any) -> None:
    if tracer_provider is not None:
        from opentelemetry.instrumentation.sqlalchemy import SQLAlchemyInstrumentor

        SQLAlchemyInstrumentor().instrument(engine=engine, tracer_provider=tracer_provider)


def apply_migrations(url: str, script_location: Path) -> None:
    """Upgrade the database to the newest revision; call before the event loop starts."""
    if _is_sqlite(url):
        _prepare_sqlite_file(url)
    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


def run_migrations(target_metadata: MetaData) -> None:
    """The body of every service's migrations/env.py."""
    from alembic import context

    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url is not set"
    if context.is_offline_mode():
        context.configure(url=url, target_metadata=target_metadata, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    def run_sync(connection: Connection) -> None:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=_is_sqlite(url),
        )
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(url, poolclass=NullPool)
        try:
            async with engine.connect() as connection:
                await connection.run_sync(run_sync)
                await connection.commit()
        finally:
            await engine.dispose()

    asyncio.run(run_async())
