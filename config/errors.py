"""The root of maildispatch's own errors, and what each means where it leaves maildispatch.

Every error maildispatch raises on purpose derives from :class:`MaildispatchError`, and also
from the builtin a caller would catch without knowing us (``ValueError`` for bad input,
``RuntimeError`` for a failure to enqueue), as aiosmtplib's errors do. Each class states its
exit status for the CLI and its HTTP status for the API (``exit_code``, ``http_status``): the
command and the API read them there, not from tables of their own.

MaildispatchError                                         exit  HTTP
├── ConfigurationError (config/settings.py)                 78   500  a setting is missing or wrong
├── InvalidJob, ValueError (producers/job.py)                2   422  a job breaks the contract or a limit
│   └── JobIdTaken (producers/errors.py)                    73   409  its id is another job's
├── InvalidJobs, ValueError (producers/errors.py)            2   422  jobs of a call were invalid; none enqueued
│   └── JobIdsTaken                                         73   409  ids of a call were taken; none enqueued
├── IdempotencyInProgress, RuntimeError (producers/errors)  75   409  another call enqueues the same key
├── EnqueueFailed, RuntimeError (producers/errors.py)       69   503  broker or Redis failed past the retry bound
├── NotPublished (producers/publishing.py)                  69   503  (inside an enqueue: becomes EnqueueFailed)
├── DeliveryError (worker/errors.py)                         -     -  a delivery attempt failed: a job's outcome
│   ├── TransientError                                                 try again later (the channel's policy)
│   └── PermanentError                                                 never retry: a Failed Send
├── AccountError, ValueError (worker/accounts/manage.py)     2   422  refused account input
├── ConnectError, ValueError (worker/accounts/connect.py)    2   422  an OAuth connection that cannot start or finish
├── DomainError, ValueError (worker/domains/manage.py)       2   422  a sending domain refused
├── VaultError (worker/accounts/vault.py)                   78   500  a secret no configured key decrypts
├── InvalidScopes, ValueError (worker/store/apikeys.py)      2   400  an API key scope that does not exist
├── InvalidEndpoint (worker/webhooks/endpoints.py)           2   422  a webhook URL or event type refused
└── BounceNotQueued (worker/bounces/intake/enqueue.py)             75     -  the broker did not take a bounce (SMTP 451)
"""

from __future__ import annotations

from typing import ClassVar


class MaildispatchError(Exception):
    """An error maildispatch raises on purpose (see the tree above)."""

    #: the CLI's exit status (sysexits.h where one fits)
    exit_code: ClassVar[int] = 1
    #: the HTTP API's status
    http_status: ClassVar[int] = 500
