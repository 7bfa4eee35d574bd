"""A provider's own codes (worker/bounces/classify/providers/): each provider is found from its
hosts and reads its own words. Adding a provider: docs/adding-a-bounce-format.md."""

from __future__ import annotations

import pytest

from worker.bounces.classify import codes
from worker.bounces.classify.providers import PROVIDERS, find_rhost_reason, provider_of
from worker.bounces.classify.providers.registry import provider
from worker.bounces.classify.reasons import Fact
from worker.bounces.classify.text import sweep


def fact(
    recipient: str,
    diagnosis: str,
    *,
    rhost: str = "",
    status: str = "",
    reply: str = "",
    command: str = "",
) -> Fact:
    """A Fact as parse.py builds one from a decoder's record (single-line diagnosis).

    ``status``, ``reply`` and ``command`` are what the report gives apart (a DSN's Status: field,
    the SMTP phase); the codes in the diagnosis are found and weighed as the parser does.
    """
    in_text = codes.find_status(diagnosis)
    found_reply = codes.find_reply(diagnosis, in_text)
    return Fact(
        status=codes.prefer_status(status, in_text, found_reply),
        diagnostic=sweep(diagnosis),
        dtype="SMTP",
        command=command if codes.is_command(command) else "",
        reply_code=(reply or found_reply) if len(found_reply) == 3 else reply,
        destination=recipient[recipient.rfind("@") + 1 :].lower(),
        rhost=rhost,
    )


#: (provider, the Fact of one failed recipient, the reason its own words give)
CASES: list[tuple[str, Fact, str]] = [
    (
        "Aol",
        fact(
            "kijitora@aol.com",
            "Host or domain name not found. Name service error for name=aol.com type=A: "
            "Host not found",
        ),
        "hostunknown",
    ),
    (
        "Apple",
        fact(
            "kijitora@icloud.com",
            "554 5.7.1 [CS01] Message rejected due to local policy. "
            "Please visit https://support.apple.com/en-us/HT204137",
        ),
        "policyviolation",
    ),
    (
        "Cloudflare",
        fact(
            "kijitora@example.org",
            "554 <192.0.2.25> found on one or more DNSBLs, see "
            "https://developers.cloudflare.com/email-routing/postmaster/#spam-and-abusive-traffic/",
            rhost="route1.mx.cloudflare.net",
        ),
        "blocked",
    ),
    (
        "Cox",
        fact("kijitora@cox.net", "550 5.1.0 <sender@example.jp> sender rejected AUP#CXSNDR"),
        "authfailure",
    ),
    (
        "Cox",
        fact("kijitora@cox.net", "552 5.1.1 <kijitora@cox.net> recipient rejected"),
        "userunknown",
    ),
    (
        "Facebook",
        fact(
            "kijitora@facebook.com",
            "550 5.1.1 RCP-P1 http://postmaster.facebook.com/response_codes?ip=192.0.2.25#rcp "
            "Refused due to recipient",
            rhost="mx-out.facebook.com",
        ),
        "userunknown",
    ),
    (
        "FrancePTT",
        fact(
            "kijitora@orange.fr",
            "550 5.1.1 Adresse d'au moins un destinataire invalide. Invalid recipient. "
            "OFR_416 [416]",
        ),
        "userunknown",
    ),
    (
        "FrancePTT",
        fact(
            "kijitora@laposte.net",
            "550 5.5.0 Le compte du destinataire est bloque. The recipient account isblocked. "
            "LPN007_420",
        ),
        "suspend",
    ),
    (
        "GoDaddy",
        fact(
            "kijitora@example.com",
            "554 p3plibsmtp03-07.prod.phx3.secureserver.net bounce.example.org IB110 "
            "Your IP is on the Spamhaus list",
            rhost="smtp.secureserver.net",
        ),
        "blocked",
    ),
    (
        "Google",
        fact(
            "kijitora@gmail.com",
            "421 4.7.0 [192.0.2.25] Our system has detected that this message is suspicious due "
            "to the very low reputation of the sending IP address.",
            rhost="gmail-smtp-in.l.google.com",
        ),
        "badreputation",
    ),
    (
        "GSuite",
        fact(
            "kijitora@googlemail.com",
            "Your message wasn't delivered to kijitora@googlemail.com because the address "
            "couldn't be found. Check for typos or unnecessary spaces and try again.",
        ),
        "userunknown",
    ),
    (
        "IUA",
        fact("kijitora@email.ua", "550 Mailbox is frozen. See http://mail.i.ua/err/3/"),
        "suspend",
    ),
    (
        "KDDI",
        fact("kijitora@ezweb.ne.jp", "550 <kijitora@ezweb.ne.jp>: User unknown"),
        "userunknown",
    ),
    (
        "MessageLabs",
        fact(
            "kijitora@example.jp",
            "501 Connection rejected by policy [7.7] 20805, please visit www.messagelabs.com/support "
            "for more details about this error message.",
            rhost="cluster5.eu.messagelabs.com",
        ),
        "badreputation",
    ),
    (
        "Microsoft",
        fact(
            "kijitora@example.com",
            "550 5.7.509 Access denied, sending domain example.org does not pass DMARC "
            "verification and has a DMARC policy of reject.",
            rhost="example-com.mail.protection.outlook.com",
        ),
        "authfailure",
    ),
    (
        # an Outlook.com filter label: the status comes from the DSN's Status: field
        "Microsoft",
        fact(
            "kijitora@outlook.com",
            "550 SC-001 (BAY004-MC1F1) Unfortunately, messages from 192.0.2.25 weren't sent. "
            "Please contact your Internet service provider since part of their network is on "
            "our block list.",
            status="5.0.0",
            rhost="outlook-com.olc.protection.outlook.com",
        ),
        "badreputation",
    ),
    (
        "Mimecast",
        fact(
            "kijitora@example.net",
            "554 Email rejected due to security policies - "
            "https://community.mimecast.com/docs/DOC-1369#554",
            rhost="eu-smtp-inbound-1.mimecast.com",
        ),
        "virusdetected",
    ),
    (
        # docomo's per-user filter refuses at DATA with a bare 550
        "NTTDOCOMO",
        fact(
            "kijitora@docomo.ne.jp",
            "550 Unknown user kijitora@docomo.ne.jp",
            status="5.0.0",
            command="DATA",
        ),
        "rejected",
    ),
    (
        "Outlook",
        fact(
            "kijitora@hotmail.com",
            "550 Requested action not taken: mailbox unavailable (3150)",
        ),
        "userunknown",
    ),
    (
        "Spectrum",
        fact(
            "kijitora@charter.net",
            "552 5.2.3 AUP#In-1530 The message exceeds the maximum size allowed",
        ),
        "mesgtoobig",
    ),
    (
        "Spectrum",
        fact("kijitora@charter.net", "554 5.7.1 AUP#CXBL-1230 Your IP address is blocked"),
        "blocked",
    ),
    (
        "Tencent",
        fact(
            "kijitora@qq.com",
            "550 Ip frequency limited. "
            "http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000725",
        ),
        "toomanyconn",
    ),
    (
        "YahooInc",
        fact(
            "kijitora@yahoo.com",
            "421 4.7.0 [TSS04] Messages from 192.0.2.25 temporarily deferred due to unexpected "
            "volume or user complaints - 4.16.55.1; see https://postmaster.yahooinc.com/error-codes",
            rhost="mta7.am0.yahoodns.net",
        ),
        "rejected",
    ),
]

HOSTS = [(p.name, suffix) for p in PROVIDERS.values() for suffix in p.hosts]


def test_every_registered_provider_has_hosts_a_finder_and_a_case() -> None:
    assert len(PROVIDERS) == 19
    for name, entry in PROVIDERS.items():
        assert entry.name == name
        assert entry.hosts, name
        assert callable(entry.find), name
    assert {name for name, _, _ in CASES} == set(PROVIDERS)  # a new provider comes with a case


@pytest.mark.parametrize(("name", "suffix"), HOSTS)
def test_a_host_suffix_maps_back_to_its_provider(name: str, suffix: str) -> None:
    host = "mx1." + suffix.lstrip(".")
    assert provider_of(Fact(rhost=host)) == name
    assert provider_of(Fact(lhost=host.upper())) == name
    assert provider_of(Fact(destination=suffix.lstrip("."))) == name


def test_the_recipient_domain_is_checked_before_the_hosts() -> None:
    assert provider_of(Fact(destination="aol.com", rhost="mx1.hotmail.com")) == "Aol"
    assert provider_of(Fact(destination="example.com", rhost="mx1.hotmail.com")) == "Outlook"
    assert provider_of(Fact(rhost="mx.example.net", lhost="mx1.hotmail.com")) == "Outlook"
    assert provider_of(Fact(destination="example.com", rhost="mx.example.net")) == ""


def test_providers_are_matched_in_registration_order() -> None:
    orders = [p.order for p in PROVIDERS.values()]
    assert orders == sorted(orders)
    assert list(PROVIDERS)[:2] == ["Aol", "Apple"]


@pytest.mark.parametrize(
    ("name", "fo", "reason"), CASES, ids=[f"{name}-{reason}" for name, _, reason in CASES]
)
def test_a_provider_reads_its_own_words(name: str, fo: Fact, reason: str) -> None:
    assert provider_of(fo) == name
    assert find_rhost_reason(fo) == reason


def test_an_unknown_provider_or_unknown_words_give_no_reason() -> None:
    assert find_rhost_reason(fact("kijitora@example.com", "550 5.1.1 User unknown")) == ""
    assert find_rhost_reason(fact("kijitora@qq.com", "550 5.0.0 something else entirely")) == ""
    # Gmail's table needs the reply code and status alongside the words
    words = "the email account that you tried to reach does not exist"
    gmail = "gmail-smtp-in.l.google.com"
    assert find_rhost_reason(fact("k@gmail.com", words, rhost=gmail)) == ""
    assert find_rhost_reason(fact("k@gmail.com", "550 5.1.1 " + words, rhost=gmail)) == (
        "userunknown"
    )


def test_a_provider_is_registered_once_and_with_hosts() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        provider("Aol", hosts=(".mail.aol.com",), order=10)(lambda fo: "")
    with pytest.raises(ValueError, match="host suffixes"):
        provider("Nobody", hosts=(), order=999)
    with pytest.raises(ValueError, match="host suffixes"):
        provider("Nobody", hosts=(".Example.COM",), order=999)
    assert "Nobody" not in PROVIDERS
