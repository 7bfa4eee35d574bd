"""A minimal Django project for the bench's peer baselines (bench/peers.py), nothing else.

``settings`` configures django-celery-email or django-post_office (``BENCH_PEER_DESIGN``) the
way their READMEs do, ``celery_app`` is the Celery app as Django projects declare it, and
``produce`` is what a web app would call per request (or per batch), run as a subprocess.
"""
