"""MySQL/MariaDB adapters (multi-table and partitioned) over asyncmy or aiomysql."""
