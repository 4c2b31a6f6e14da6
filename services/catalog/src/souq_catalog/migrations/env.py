"""Alembic environment of the catalog's own database."""

from souq_catalog.repository import metadata
from souq_chassis.db import run_migrations

run_migrations(metadata)
