"""Store: schema migrations, connections, TimescaleDB/plain-PostgreSQL detection and queries."""
