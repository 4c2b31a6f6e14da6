"""A version per product price, counted in the transaction that changes it: the order of its
`ProductPriceChanged` events for consumers, instead of wall clocks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ADD COLUMN (not a batch copy of the table, which would drop the search triggers).
    op.add_column(
        "products", sa.Column("price_version", sa.BigInteger, nullable=False, server_default="0")
    )


def downgrade() -> None:
    op.execute("ALTER TABLE products DROP COLUMN price_version")
