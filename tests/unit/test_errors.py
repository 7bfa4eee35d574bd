"""One error root: every error maildispatch raises on purpose is a MaildispatchError, drawn in
config/errors.py's tree with the exit and HTTP statuses its class gives the CLI and the API."""

from __future__ import annotations

import re

import config.errors
import producers.errors
import producers.publishing
import worker.accounts.connect
import worker.accounts.manage
import worker.accounts.vault
import worker.bounces.intake.enqueue
import worker.domains.manage
import worker.errors
import worker.store.apikeys
from config.errors import MaildispatchError
from config.settings import ConfigurationError
from producers.job import InvalidJob

MODULES = (
    producers.errors,
    producers.publishing,
    worker.accounts.connect,
    worker.accounts.manage,
    worker.accounts.vault,
    worker.bounces.intake.enqueue,
    worker.domains.manage,
    worker.errors,
    worker.store.apikeys,
)
ROW = re.compile(r"[├└]── (\w+)[^\n]*?\s(\d+|-)\s+(\d+|-)\s\s")


def _subclasses(cls: type) -> set[type]:
    found = set(cls.__subclasses__())
    for sub in list(found):
        found |= _subclasses(sub)
    return found


def test_every_error_is_in_the_tree_with_its_statuses() -> None:
    assert MODULES  # imported: their classes are MaildispatchError's subclasses now
    drawn = {m.group(1): (m.group(2), m.group(3)) for m in ROW.finditer(config.errors.__doc__)}
    ours = {
        c
        for c in _subclasses(MaildispatchError)
        if c.__module__.startswith(("config", "producers", "worker"))
    }
    assert {c.__name__ for c in ours} <= set(drawn) | {"TransientError", "PermanentError"}
    for cls in ours:
        if cls.__name__ not in drawn:
            continue
        exit_code, http_status = drawn[cls.__name__]
        if exit_code != "-":
            assert cls.exit_code == int(exit_code), cls
        if http_status != "-":
            assert cls.http_status == int(http_status), cls


def test_errors_also_inherit_the_builtin_a_caller_would_catch() -> None:
    assert issubclass(InvalidJob, ValueError) and issubclass(InvalidJob, MaildispatchError)
    assert issubclass(producers.errors.EnqueueFailed, RuntimeError)
    assert issubclass(ConfigurationError, MaildispatchError)
    assert issubclass(worker.errors.PermanentError, MaildispatchError)
