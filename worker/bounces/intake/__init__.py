"""Bounces in: the SMTP listener (``server.py``), the IMAP poller (``poll.py``), the queue
(``enqueue.py``, ``tasks.py``), ingest into Failed Sends and suppressions (``ingest.py``), the
dead-letter store and the commands."""
