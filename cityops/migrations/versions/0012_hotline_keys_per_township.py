"""Event center: 12345 ticket keys are per township (``12345:<township>:<ticket>``), no longer global.

A ticket id is unique only in the township whose work-order system issued it (``events.hotline.hotline_key``);
keys stored before this revision (``12345:<ticket>``) get the township of their case.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE event_cases SET external_key = '12345:' || coalesce(township_code, '') || ':' || substr(external_key, 7) "
               "WHERE source = 'hotline' AND external_key LIKE '12345:%'")


def downgrade() -> None:
    # Fails on the unique index if two townships imported the same ticket id meanwhile: resolve those first.
    op.execute("UPDATE event_cases SET external_key = '12345:' || "
               "substr(external_key, length('12345:' || coalesce(township_code, '') || ':') + 1) "
               "WHERE source = 'hotline' AND external_key LIKE '12345:%'")
