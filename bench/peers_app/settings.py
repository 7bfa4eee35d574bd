"""Django settings for one peer baseline; the bench passes everything in ``BENCH_*`` variables.

``BENCH_PEER_DESIGN`` is ``celery_email`` (django-celery-email's backend in front of Django's
SMTP backend) or ``post_office`` (django-post_office with ``CELERY_ENABLED``, its SMTP backend
being Django's). Both send through Django's SMTP backend to the bench relay.
"""

from __future__ import annotations

import os
from pathlib import Path

DESIGN = os.environ.get("BENCH_PEER_DESIGN", "celery_email")
DIR = Path(os.environ.get("BENCH_PEER_DIR", "var/peers"))

SECRET_KEY = "bench-peers-not-a-secret"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
DEFAULT_FROM_EMAIL = "Bench Sender <sender@acme.example>"

# Django's SMTP backend, pointed at the bench relay (plain SMTP on loopback, no TLS, no auth)
EMAIL_HOST = os.environ.get("BENCH_RELAY_HOST", "127.0.0.1")
EMAIL_PORT = int(os.environ.get("BENCH_RELAY_PORT", "2525"))
EMAIL_TIMEOUT = 60
SMTP_BACKEND = "django.core.mail.backends.smtp.EmailBackend"

# Celery reads the CELERY_* names (celery_app.py: namespace="CELERY"); everything else default
CELERY_BROKER_URL = os.environ.get("BENCH_BROKER_URL", "redis://127.0.0.1:6379/15")
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Only the queue's name is ours, so that one design's leftovers never reach the other's worker
CELERY_TASK_DEFAULT_QUEUE = f"bench.peers.{DESIGN}"

if DESIGN == "celery_email":
    INSTALLED_APPS = ["djcelery_email"]
    EMAIL_BACKEND = "djcelery_email.backends.CeleryEmailBackend"
    CELERY_EMAIL_BACKEND = SMTP_BACKEND  # the worker's backend; chunks of 10 emails (default)
    DATABASES: dict[str, dict[str, object]] = {}
elif DESIGN == "post_office":
    INSTALLED_APPS = ["post_office"]
    EMAIL_BACKEND = SMTP_BACKEND  # post_office's "default" backend falls back to EMAIL_BACKEND
    POST_OFFICE = {
        "CELERY_ENABLED": True,
        # FileLock path: os.path.join keeps an absolute name, so the lock is private to the run
        "LOCK_FILE_NAME": str(DIR / "post_office"),
    }
    # mail.send() renders subject and body as Django templates, even without a template
    TEMPLATES = [{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}]
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DIR / "post_office.sqlite3"),
            # The web process inserts while the worker reads and updates: WAL lets readers and
            # the writer overlap, and the timeout waits out a lock rather than failing at 5 s
            "OPTIONS": {"timeout": 30, "init_command": "PRAGMA journal_mode=WAL;"},
        }
    }
else:
    raise RuntimeError(f"unknown BENCH_PEER_DESIGN {DESIGN!r}")
