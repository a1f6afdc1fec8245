"""ClickHouse/chDB schema, archiver and analyst queries (not built yet: see the issues)."""
