"""Webhooks: the events of config/events.py pushed to the owners' endpoints (issue 16).

``endpoints.py`` (what is registered), ``outbox.py`` (events fanned out from the stream into
ordered lanes per endpoint, and their retry schedule), ``deliver.py`` (a lane's events POSTed,
signed, in order: the ``mail.events`` task).
"""
