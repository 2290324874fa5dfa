"""A small Flask app on SQLite whose three background jobs run on bgjobs (see README.md)."""
