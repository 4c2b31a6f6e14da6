"""Cart lines per user and the cart's copy of their products' prices.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cart_items",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("product_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        # The configured maximum (99 by default) is the app's; the database bounds every one.
        sa.CheckConstraint("quantity >= 1 AND quantity <= 999", name="ck_cart_items_quantity"),
    )
    op.create_table(
        "product_prices",
        sa.Column("product_id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("sku", sa.String(40), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("amount_cents", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("amount_cents > 0", name="ck_product_prices_amount_positive"),
    )


def downgrade() -> None:
    op.drop_table("product_prices")
    op.drop_table("cart_items")
