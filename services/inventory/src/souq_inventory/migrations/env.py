"""Alembic environment of inventory's own database."""

from souq_chassis.db import run_migrations
from souq_inventory.repository import metadata

run_migrations(metadata)
