"""Alembic migration scripts for rungflow's schema.

This directory is an Alembic script location, not an API: run it through
:func:`storage.schema.upgrade_schema` (``EventStore`` does so on open).
"""
