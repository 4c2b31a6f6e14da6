"""Categories, products and the full-text index.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "categories",
        sa.Column("slug", sa.String(40), primary_key=True),
        sa.Column("name", sa.String(120), nullable=False),
    )
    op.create_table(
        "products",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("sku", sa.String(40), nullable=False, unique=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text, nullable=False, server_default=""),
        sa.Column("category", sa.String(40), sa.ForeignKey("categories.slug"), nullable=False),
        sa.Column("price_amount_cents", sa.BigInteger, nullable=False),
        sa.Column("price_currency", sa.String(3), nullable=False),
        sa.Column("image_url", sa.String(500), nullable=False, server_default=""),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("price_amount_cents > 0", name="ck_products_price_positive"),
    )
    op.create_index("ix_products_category", "products", ["category"])
    if op.get_bind().dialect.name == "sqlite":
        # An external-content FTS5 index kept in step with products by triggers.
        op.execute(
            "CREATE VIRTUAL TABLE products_fts USING fts5("
            "name, description, content='products', content_rowid='id', "
            "tokenize='unicode61 remove_diacritics 2')"
        )
        op.execute(
            "CREATE TRIGGER products_fts_insert AFTER INSERT ON products BEGIN "
            "INSERT INTO products_fts(rowid, name, description) "
            "VALUES (new.id, new.name, new.description); END"
        )
        op.execute(
            "CREATE TRIGGER products_fts_delete AFTER DELETE ON products BEGIN "
            "INSERT INTO products_fts(products_fts, rowid, name, description) "
            "VALUES ('delete', old.id, old.name, old.description); END"
        )
        op.execute(
            "CREATE TRIGGER products_fts_update AFTER UPDATE OF name, description ON products "
            "BEGIN "
            "INSERT INTO products_fts(products_fts, rowid, name, description) "
            "VALUES ('delete', old.id, old.name, old.description); "
            "INSERT INTO products_fts(rowid, name, description) "
            "VALUES (new.id, new.name, new.description); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE products_fts")
    op.drop_index("ix_products_category", "products")
    op.drop_table("products")
    op.drop_table("categories")
