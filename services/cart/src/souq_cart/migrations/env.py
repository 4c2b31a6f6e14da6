"""Alembic environment of cart's own database."""

from souq_cart.repository import metadata
from souq_chassis.db import run_migrations

run_migrations(metadata)
