"""Fixtures of the user-account tests: a throwaway PKI, Google's and Microsoft's endpoints (local
fakes) and an Exchange Online stand-in that takes ``AUTH XOAUTH2`` only."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.auth_smtpd import Pki, make_pki, xoauth2_server
from tests.support.fake_google import FakeGoogle
from tests.support.fake_microsoft import FakeMicrosoft
from tests.support.relay import Relay


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA and a certificate for 127.0.0.1 it issued."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def google() -> Iterator[FakeGoogle]:
    """Google's token endpoint, consent page and Gmail API, local."""
    fake = FakeGoogle().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def microsoft() -> Iterator[FakeMicrosoft]:
    """Microsoft identity platform's v2.0 endpoints, local."""
    fake = FakeMicrosoft().start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def exchange(pki: Pki, microsoft: FakeMicrosoft) -> Iterator[Relay]:
    """An SMTP server taking XOAUTH2 with the fake's access tokens, closing after each message."""
    server = xoauth2_server(pki, microsoft.holder).start()
    yield server
    server.stop()
