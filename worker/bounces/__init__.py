"""Bounce handling: ``intake/`` (the listener, the poller, the queue, ingest into Failed Sends)
and ``classify/`` (the report parser, one decoder per format, the reasons): I/O apart from the
pure functions that read a report."""
