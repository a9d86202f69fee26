"""Alembic environment: runs on the engine CityOps hands over (SQLite/GeoPackage or PostGIS)."""

from alembic import context

import cityops.models  # noqa: F401  (registers every capability's tables on Base.metadata)
from cityops.core.db import Base

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
