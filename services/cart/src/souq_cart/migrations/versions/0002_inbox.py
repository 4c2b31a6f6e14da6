"""The inbox: ids of the messages handled, recorded with their effect.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op
from souq_chassis.messaging.tables import create_inbox

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    create_inbox(op)


def downgrade() -> None:
    op.drop_table("inbox")
