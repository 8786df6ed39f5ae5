"""The relational store: SQLAlchemy Core tables, engines, repositories and the unit of work."""
