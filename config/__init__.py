"""Configuration: typed settings, the Celery configuration and the retry policy. No I/O at import."""
