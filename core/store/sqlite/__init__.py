"""The SQLite backend: one file per store under DATA_DIR (``backend.SqliteBackend``), on
``database.SqliteDatabase`` (a thread per file, WAL, group commit)."""
