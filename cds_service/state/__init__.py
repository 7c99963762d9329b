"""Service state (feedback, card index, snooze, audit, seen JWT ids) in SQLite or PostgreSQL."""
