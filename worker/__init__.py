"""The workers: Celery app and tasks, message building, channels, bounces and the store."""
