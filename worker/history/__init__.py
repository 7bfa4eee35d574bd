"""The message history: every job's outcome kept in the SQL store for MAILDISPATCH_HISTORY_DAYS.

``record`` writes it from the event stream (a step of the scheduler); ``query`` reads it for
``GET /v1/messages``, ``maildispatch messages list`` and the status of a job whose Redis state
has expired.
"""
