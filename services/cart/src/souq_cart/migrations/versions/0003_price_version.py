"""The cart's price copy keeps catalog's price version, to order price events by it.

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
    op.add_column("product_prices", sa.Column("price_version", sa.BigInteger, nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE product_prices DROP COLUMN price_version")
