"""Persistence: the database engine, tables and repositories."""
