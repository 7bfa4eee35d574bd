"""The Celery app, declared as Celery's "First steps with Django" page does.

The worker is ``python -m celery -A bench.peers_app.celery_app worker``; the producer imports
this module before ``django.setup()`` so that the libraries' ``shared_task``s bind to it.
"""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.peers_app.settings")

app = Celery("peers")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()  # djcelery_email.tasks or post_office.tasks, from INSTALLED_APPS
