"""Read sessions (``cityops.core.db.read_sessionmaker``, the ``ReadDB`` dependency of the read-only routes): on
PostgreSQL no transaction is open around their statements (no BEGIN/ROLLBACK round trips), the ordinary sessions
keep theirs; on SQLite they are the ordinary sessions. Both backends read the same rows through them."""

from __future__ import annotations

from sqlalchemy import func, select, text

from cityops.core.db import read_sessionmaker
from cityops.org.models import Unit


def test_read_sessions_read_without_a_transaction(store):
    with store.sessions() as s:
        s.add(Unit(code="500154", name="测试区", level="district", path="/500154/"))
        s.commit()
    reads = read_sessionmaker(store.engine)
    assert read_sessionmaker(store.engine) is reads  # one per engine
    with reads() as session:
        assert session.scalar(select(func.count()).select_from(Unit).where(Unit.code == "500154")) == 1
        dbapi = session.connection().connection.dbapi_connection
        if store.backend == "postgis":
            import psycopg

            assert dbapi.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        else:
            assert reads.kw["bind"] is store.engine
    if store.backend == "postgis":
        import psycopg

        with store.sessions() as session:  # the ordinary sessions are still transactional
            session.execute(text("SELECT 1"))
            status = session.connection().connection.dbapi_connection.info.transaction_status
            assert status == psycopg.pq.TransactionStatus.INTRANS
