"""Embedded SQLite adapter: the zero-setup store, one table per shard in one WAL file."""
