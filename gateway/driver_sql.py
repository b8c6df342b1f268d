"""Hot statements run on the driver's cursor, compiled once per dialect from SQLAlchemy.

The schema and the statements stay defined once, as SQLAlchemy tables and
statements; only their execution skips SQLAlchemy's per-statement machinery
(execution context, parameter dictionaries, result objects), which cost more
than the driver's own work for the few rows an acceptance writes.

Values are converted by the very bind and result processors SQLAlchemy would
apply for that dialect (``TypeEngine.dialect_impl``), so what is stored, and
what is read back, is the same either way. A driver error is raised as the
SQLAlchemy exception it would have been (``IntegrityError`` for a unique
violation), on SQLite and PostgreSQL alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.sql.expression import ClauseElement

_Convert = Callable[[Any], Any]


@dataclass(frozen=True)
class _Compiled:
    sql: str
    binds: tuple[tuple[int, _Convert], ...]  # (value position, bind processor)
    constants: tuple[Any, ...]  # values the statement carries, converted, after the given ones
    order: tuple[int, ...] | None  # positional: value positions in placeholder order
    names: tuple[str, ...] | None  # named paramstyle: the name of each value
    results: tuple[tuple[int, _Convert], ...]  # (column position, result processor)
    dbapi_error: type[Exception]

    def params(self, given: Sequence[Any]) -> Any:
        values = [*given, *self.constants]
        for position, convert in self.binds:
            values[position] = convert(values[position])
        if self.names is not None:
            return dict(zip(self.names, values, strict=True))
        if self.order is not None:
            return [values[i] for i in self.order]
        return values

    def row(self, row: Sequence[Any]) -> tuple[Any, ...]:
        if not self.results:
            return tuple(row)
        converted = list(row)
        for position, convert in self.results:
            converted[position] = convert(converted[position])
        return tuple(converted)


class DriverStatement:
    """A SQLAlchemy statement whose parameters are given positionally, in ``params`` order.

    ``params`` are the statement's bind names: for an insert the columns it
    writes, for any other statement its ``bindparam`` names.
    """

    def __init__(self, statement: ClauseElement, params: Sequence[str] = ()) -> None:
        self.statement = statement
        self.params = tuple(params)
        self._compiled: dict[tuple[type[Dialect], str], _Compiled] = {}

    def execute(self, connection: Connection, values: Sequence[Any] = ()) -> int:
        """Run the statement once; the driver's row count."""
        compiled = self._for(connection.dialect)
        params = compiled.params(values)
        cursor = _driver(connection).cursor()
        try:
            cursor.execute(compiled.sql, params)
            return int(cursor.rowcount)
        except compiled.dbapi_error as exc:
            raise _translated(connection.engine, compiled, params, exc, many=False) from exc
        finally:
            cursor.close()

    def executemany(self, connection: Connection, rows: Iterable[Sequence[Any]]) -> None:
        """Run the statement for each row of values, in one driver call."""
        compiled = self._for(connection.dialect)
        params = [compiled.params(values) for values in rows]
        if not params:
            return
        cursor = _driver(connection).cursor()
        try:
            cursor.executemany(compiled.sql, params)
        except compiled.dbapi_error as exc:
            raise _translated(connection.engine, compiled, params, exc, many=True) from exc
        finally:
            cursor.close()

    def rows(self, connection: Connection, values: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows a query selects, each a tuple in the order of its selected columns."""
        compiled = self._for(connection.dialect)
        return self._fetch(connection.engine, compiled, _driver(connection), values)

    def read(self, engine: Engine, values: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """``rows`` of a query that is a read transaction of its own, on a pooled connection.

        One statement sees one snapshot without a BEGIN and a COMMIT around it,
        nor a SQLAlchemy ``Connection``: a third of the cost of ``db.begin_read()``.
        """
        compiled = self._for(engine.dialect)
        pooled = engine.raw_connection()
        try:
            return self._fetch(engine, compiled, pooled.driver_connection, values)
        finally:
            pooled.close()  # back to the pool, which rolls back whatever the driver began

    @staticmethod
    def _fetch(
        engine: Engine, compiled: _Compiled, driver: Any, values: Sequence[Any]
    ) -> list[tuple[Any, ...]]:
        params = compiled.params(values)
        cursor = driver.cursor()
        try:
            cursor.execute(compiled.sql, params)
            fetched = cursor.fetchall()
        except compiled.dbapi_error as exc:
            raise _translated(engine, compiled, params, exc, many=False) from exc
        finally:
            cursor.close()
        return [compiled.row(row) for row in fetched]

    def _for(self, dialect: Dialect) -> _Compiled:
        key = (type(dialect), dialect.paramstyle)  # the driver too: psycopg2 casts otherwise
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._compile(dialect)
        return compiled

    def _compile(self, dialect: Dialect) -> _Compiled:
        compiled: Any = self.statement.compile(dialect=dialect, column_keys=list(self.params))
        given = {name: i for i, name in enumerate(self.params)}
        slots = dict(given)
        constants: list[Any] = []
        types: dict[str, Any] = {}
        for bind, name in compiled.bind_names.items():
            types[name] = bind.type
            if name in given:
                continue
            if bind.required or bind.callable is not None:
                raise ValueError(f"the statement binds {name!r}, which is not among its params")
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            value = bind.effective_value
            slots[name] = len(self.params) + len(constants)
            constants.append(value if process is None else process(value))
        if set(given) - set(types) or compiled.escaped_bind_names:
            raise ValueError(f"the statement binds {sorted(types)}, not {sorted(given)}")
        order: tuple[int, ...] | None = None
        names: tuple[str, ...] | None = None
        if compiled.positional:
            order = tuple(slots[name] for name in compiled.positiontup)
            if order == tuple(range(len(slots))):
                order = None
        else:
            names = tuple(sorted(slots, key=slots.__getitem__))
        binds = []
        for name, i in given.items():
            process = types[name].dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                binds.append((i, process))
        results = []
        if isinstance(self.statement, sa.Select):
            for i, column in enumerate(self.statement.selected_columns):
                process = column.type.dialect_impl(dialect).result_processor(dialect, None)
                if process is not None:
                    results.append((i, process))
        return _Compiled(
            sql=compiled.string,
            binds=tuple(binds),
            constants=tuple(constants),
            order=order,
            names=names,
            results=tuple(results),
            dbapi_error=dialect.loaded_dbapi.Error,
        )


def _driver(connection: Connection) -> Any:
    """The DBAPI connection under ``connection``, in the transaction it has begun."""
    return connection.connection.driver_connection


def _translated(
    engine: Engine, compiled: _Compiled, params: Any, exc: Exception, *, many: bool
) -> sa.exc.StatementError:
    """The SQLAlchemy exception ``Connection.execute`` would have raised for ``exc``."""
    return sa.exc.DBAPIError.instance(
        compiled.sql,
        params,
        exc,
        compiled.dbapi_error,
        hide_parameters=engine.hide_parameters,
        dialect=engine.dialect,
        ismulti=many,
    )


__all__ = ["DriverStatement"]
