"""Bounce handling: inbound bounce server and poller, report parser and ingest."""
