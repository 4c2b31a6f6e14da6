"""Alembic environment of identity's own database."""

from souq_chassis.db import run_migrations
from souq_identity.repository import metadata

run_migrations(metadata)
