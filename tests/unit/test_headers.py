"""Headers are RFC 5322 or refused.

Property tests (hypothesis) over the job schema and the message builder: whatever passes
validation builds a message with exactly the headers maildispatch sets plus the job's own, no bare
CR or LF, no line over 998 octets, and header values that read back as given. Then the edges
one by one: header names ending in a newline, values too long to fold, SMTPUTF8 local parts, IDN
domains, header bytes in the size limit, and the recipient count before the addresses.
"""

from __future__ import annotations

import base64
import email
import email.policy
import re
import time
from email.header import decode_header, make_header
from email.utils import getaddresses
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.headers import MAX_LINE
from producers.job import InvalidJob, parse_job
from worker.message.build import build_message

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: text that stresses headers: line breaks of every kind, controls, non-ASCII, long runs
NASTY = st.sampled_from(
    ["\r", "\n", "\r\n", "\x00", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\t", " ", ":",
     "=?utf-8?q?x?=", '"', "\\", "<", ">", ",", ";", "é", "日本", "\U0001f600", "Bcc: x@evil.test"]
)  # fmt: skip
#: what validation should let through, as awkward as it gets: specials, encoded-word look-alikes,
#: tabs, non-ASCII, emoji, runs of one character long enough to need folding
PRINTABLE = st.characters(
    blacklist_categories=("Cc", "Cs"), blacklist_characters="\x85\u2028\u2029"
) | st.just("\t")
SAFE_TEXT = st.one_of(
    st.text(PRINTABLE, max_size=60),
    st.lists(
        st.one_of(NASTY.filter(lambda t: t.isprintable() or t == "\t"), st.text(PRINTABLE, max_size=8)),
        max_size=20,
    ).map("".join),
    st.builds(lambda c, n, tail: c * n + tail, st.sampled_from("aé -"), st.integers(0, 1000),
              st.text(PRINTABLE, max_size=3)),
)  # fmt: skip
ANY_TEXT = st.one_of(
    SAFE_TEXT, st.lists(st.one_of(NASTY, st.text(max_size=8)), max_size=20).map("".join)
)
SAFE_NAME = st.from_regex(r"X-[A-Za-z0-9-]{1,20}", fullmatch=True)
ANY_NAME = st.one_of(
    SAFE_NAME,
    st.builds(lambda n, s: n + s, st.from_regex(r"X-[A-Za-z]{1,8}", fullmatch=True), NASTY),
    st.text(min_size=1, max_size=10),
)
SAFE_ADDRESS = st.one_of(
    st.sampled_from(
        ["bob@example.org", "Bob.Smith@Example.COM", "bob@straße.de", "bob@bücher.example",
         "x@xn--bcher-kva.example", "o'neil+tag@example.org",
         "l" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"]
    ),
    st.from_regex(r"[a-z]{1,10}@[a-z]{1,10}\.(org|com)", fullmatch=True),
)  # fmt: skip
ANY_ADDRESS = st.one_of(
    SAFE_ADDRESS,
    st.sampled_from(["zoë@example.org", "b@[127.0.0.1]", "bad", "a@b@c.org", "bob@example.org\n"]),
)


def mailbox(text: st.SearchStrategy[str], address: st.SearchStrategy[str]) -> Any:
    return st.one_of(
        address,
        st.fixed_dictionaries({"address": address}, optional={"name": text}),
        st.builds(lambda n, a: f"{n} <{a}>", text, address),
    )


@st.composite
def jobs(draw: st.DrawFn, safe: bool = True) -> dict[str, Any]:
    """Job input: meant to pass validation (``safe``), or anything; validation decides."""
    text = SAFE_TEXT if safe else ANY_TEXT
    box = mailbox(text, SAFE_ADDRESS if safe else ANY_ADDRESS)
    name = SAFE_NAME if safe else ANY_NAME
    job: dict[str, Any] = {
        "owner": "o1",
        "identity": draw(box),
        "to": draw(st.lists(box, min_size=1, max_size=3)),
        "subject": draw(text),
        "text": draw(st.text(max_size=300)) or "x",
        "headers": draw(st.dictionaries(name, text, max_size=3)),
    }
    if draw(st.booleans()):
        job["cc"] = draw(st.lists(box, max_size=2))
    if draw(st.booleans()):
        job["reply_to"] = draw(box)
    if draw(st.booleans()):
        job["html"] = draw(st.text(max_size=200))
    if draw(st.booleans()):
        filename = draw(st.one_of(text, st.text(PRINTABLE, min_size=1, max_size=255)))
        job["attachments"] = [{"filename": filename, "content": base64.b64encode(b"data").decode()}]
    return job


def header_block(data: bytes) -> bytes:
    return data.split(b"\r\n\r\n", 1)[0]


def field_names(data: bytes) -> list[str]:
    """The names of the top-level header fields, in order (continuation lines skipped)."""
    lines = header_block(data).split(b"\r\n")
    return [line.split(b":", 1)[0].decode() for line in lines if line[:1] not in (b" ", b"\t")]


def assert_wire_clean(data: bytes) -> None:
    assert re.search(rb"\r(?!\n)|(?<!\r)\n", data) is None, "a bare CR or LF"
    longest = max(len(line) for line in data.split(b"\r\n"))
    assert longest <= MAX_LINE, f"a line of {longest} octets"


def squeeze(text: str) -> str:
    return " ".join(text.split())


def mailboxes(data: bytes, name: str) -> list[tuple[str, str]]:
    """(display name, address) of an address header, names decoded as RFC 2047 §6.2 says:
    white space between two encoded words is not part of the text. (The stdlib's default
    policy keeps it in a phrase, so "Zoë" split over two words would read "Zo ë".)"""
    raw = email.message_from_bytes(data, policy=email.policy.compat32)[name]
    return [(str(make_header(decode_header(n))), a) for n, a in getaddresses([str(raw)])]


@PROPERTY
@given(st.one_of(jobs(safe=True), jobs(safe=False)))
def test_a_valid_job_builds_only_its_headers_and_clean_lines(data: dict[str, Any]) -> None:
    try:
        job = parse_job(data)
    except InvalidJob as exc:
        assert exc.errors  # refused, naming a field: nothing to build
        return
    built = build_message(job, domain="mail.op.test", sender="mailer@mail.op.test").data
    assert_wire_clean(built)
    expected = ["From", "Sender", "To"]
    expected += ["Cc"] if job.cc else []
    expected += ["Reply-To"] if job.reply_to else []
    expected += ["Subject", "Date", "Message-ID", *job.headers, "MIME-Version", "Content-Type"]
    names = field_names(built)
    assert [n for n in names if n != "Content-Transfer-Encoding"] == expected
    msg = email.message_from_bytes(built, policy=email.policy.default)
    assert squeeze(str(msg["Subject"])) == squeeze(job.subject)
    for name, value in job.headers.items():
        assert squeeze(str(msg[name])) == squeeze(value), name
    assert [a.addr_spec for a in msg["To"].addresses] == [b.address for b in job.to]
    shown = mailboxes(built, "To")
    assert [squeeze(n) for n, _ in shown] == [squeeze(b.name or "") for b in job.to]
    assert [a for _, a in shown] == [b.address for b in job.to]
    for part, attachment in zip(msg.iter_attachments(), job.attachments, strict=True):
        assert squeeze(part.get_filename() or "") == squeeze(attachment.filename)


@PROPERTY
@given(ANY_NAME, ANY_TEXT)
def test_an_extra_header_is_one_header_or_refused(name: str, value: str) -> None:
    data = {"owner": "o", "identity": "a@example.com", "to": ["b@example.org"], "text": "x"}
    try:
        job = parse_job(data | {"headers": {name: value}})
    except InvalidJob as exc:
        assert exc.errors[0].field == "headers"
        return
    built = build_message(job, domain="d.test").data
    assert_wire_clean(built)
    assert field_names(built).count(name) == 1
    assert re.fullmatch(r"[!-9;-~]{1,76}", name)


@pytest.mark.parametrize("name", ["X-Tag\n", "X-Tag\r\n", "X-Tag\r", "\nX-Tag", "X-Tag:", "X Tag"])
def test_a_header_name_with_a_line_break_or_colon_is_refused(name: str) -> None:
    data = {"owner": "o", "identity": "a@example.com", "to": ["b@example.org"], "text": "x"}
    with pytest.raises(InvalidJob, match="not a valid header name"):
        parse_job(data | {"headers": {name: "v"}})


@pytest.mark.parametrize("char", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\x7f"])
@pytest.mark.parametrize("field", ["subject", "headers", "identity", "attachments"])
def test_characters_that_break_lines_are_refused_everywhere(char: str, field: str) -> None:
    data: dict[str, Any] = {
        "owner": "o",
        "identity": "a@example.com",
        "to": ["b@example.org"],
        "text": "x",
    }
    value = f"x{char}Bcc: evil@example.net"
    data[field] = {
        "subject": value,
        "headers": {"X-Tag": value},
        "identity": {"name": value, "address": "a@example.com"},
        "attachments": [{"filename": value, "content": "eA=="}],
    }[field]
    with pytest.raises(InvalidJob) as refused:
        parse_job(data)
    assert refused.value.errors[0].field.startswith(field)


def test_a_value_too_long_to_fold_is_refused_and_a_long_one_is_folded() -> None:
    data = {"owner": "o", "identity": "a@example.com", "to": ["b@example.org"], "text": "x"}
    with pytest.raises(InvalidJob, match="cannot be folded"):
        parse_job(data | {"headers": {"List-Id": "x" * 990}})
    with pytest.raises(InvalidJob, match="longer than 998"):
        parse_job(data | {"headers": {"X-Tag": "word " * 200}})
    job = parse_job(data | {"headers": {"X-Tag": "word " * 190}, "subject": "S" * 998})
    built = build_message(job, domain="d.test").data
    assert_wire_clean(built)
    msg = email.message_from_bytes(built, policy=email.policy.default)
    assert str(msg["Subject"]) == "S" * 998  # one word: as encoded words, which break anywhere
    assert squeeze(str(msg["X-Tag"])) == squeeze("word " * 190)
    assert max(len(line) for line in header_block(built).split(b"\r\n")) <= 78 + 10


def test_a_long_non_ascii_name_and_file_name_fold() -> None:
    job = parse_job(
        {
            "owner": "o",
            "identity": {"name": "Zoë " * 50, "address": "a@example.com"},
            "to": ["b@example.org"],
            "text": "x",
            "attachments": [{"filename": "é" * 255, "content": "eA=="}],
        }
    )
    built = build_message(job, domain="d.test").data
    assert_wire_clean(built)
    msg = email.message_from_bytes(built, policy=email.policy.default)
    assert mailboxes(built, "From") == [("Zoë " * 50, "a@example.com")]
    assert next(msg.iter_attachments()).get_filename() == "é" * 255


@pytest.mark.parametrize("text", ["=??B??=", "Re: =?utf-8?q?caf=C3=A9?= menu", "a =?x", "?= =?"])
def test_text_that_looks_like_an_encoded_word_reads_back_as_given(text: str) -> None:
    # a reader decodes =?charset?enc?text?= wherever it stands: such text is sent encoded
    job = parse_job(
        {
            "owner": "o",
            "identity": {"name": text, "address": "a@example.com"},
            "to": ["b@example.org"],
            "subject": text,
            "headers": {"X-Campaign": text},
            "text": "x",
            "attachments": [{"filename": text + ".txt", "content": "eA=="}],
        }
    )
    built = build_message(job, domain="d.test").data
    assert_wire_clean(built)
    msg = email.message_from_bytes(built, policy=email.policy.default)
    assert str(msg["Subject"]) == text
    assert str(msg["X-Campaign"]) == text
    assert mailboxes(built, "From") == [(text, "a@example.com")]
    assert next(msg.iter_attachments()).get_filename() == text + ".txt"


def test_an_smtputf8_local_part_is_refused_at_validation() -> None:
    data = {"owner": "o", "identity": "a@example.com", "text": "x"}
    for field in ("to", "cc", "bcc"):
        with pytest.raises(InvalidJob, match="SMTPUTF8") as refused:
            parse_job(data | {field: ["zoë@example.org"]})
        assert refused.value.errors[0].field == f"{field}.0.address"
    with pytest.raises(InvalidJob, match="SMTPUTF8"):
        parse_job(data | {"to": ["b@example.org"], "identity": "Zoë <zoë@example.com>"})


@pytest.mark.parametrize(
    ("given_address", "ascii_address"),
    [
        ("bob@straße.de", "bob@xn--strae-oqa.de"),  # IDNA 2008: not "strasse" (IDNA 2003)
        ("Bob@Bücher.Example", "Bob@xn--bcher-kva.example"),
        ("bob@xn--bcher-kva.example", "bob@xn--bcher-kva.example"),
    ],
)
def test_an_idn_domain_is_the_same_a_label_in_envelope_and_headers(
    given_address: str, ascii_address: str
) -> None:
    job = parse_job(
        {
            "owner": "o",
            "identity": f"Ann <ann@{given_address.split('@')[1]}>",
            "to": [given_address],
            "cc": [f"Carol <{given_address}>"],
            "text": "x",
        }
    )
    assert job.recipients == (ascii_address,)  # the envelope (RCPT TO) and the store
    built = build_message(job, domain="d.test").data
    msg = email.message_from_bytes(built, policy=email.policy.default)
    assert msg["To"].addresses[0].addr_spec == ascii_address
    assert msg["Cc"].addresses[0].addr_spec == ascii_address
    assert msg["From"].addresses[0].domain == ascii_address.split("@")[1]
    assert built.isascii()


def test_the_recipient_count_is_checked_before_any_address() -> None:
    many = [f"not an address {i}" for i in range(200_000)]
    data = {"owner": "o", "identity": "a@example.com", "to": many, "text": "x"}
    started = time.perf_counter()
    with pytest.raises(InvalidJob) as refused:
        parse_job(data, max_recipients=100)
    assert time.perf_counter() - started < 2  # validating 200,000 addresses takes far longer
    assert [(e.field, e.message) for e in refused.value.errors] == [
        ("to", "more than 100 recipients")
    ]
    # the same address (its domain in any case), or with a name, counts once
    same = ["a@example.org", "a@EXAMPLE.org", "Ann <a@example.org>", {"address": "a@example.org"}]
    assert parse_job(data | {"to": same}, max_recipients=1).recipients == ("a@example.org",)


def test_header_bytes_count_toward_the_size() -> None:
    small = {"owner": "o", "identity": "a@example.com", "to": ["b@example.org"], "text": "x"}
    headers = {f"X-H{i}": "v " * 450 for i in range(20)}
    job = parse_job(small | {"headers": headers})
    built = build_message(job, domain="d.test").data
    assert job.estimated_size() >= len(built) > 18_000
    plain = parse_job(small)
    assert plain.estimated_size() < 3_000


@pytest.mark.parametrize(
    "content_type", ["text/plain\n", "text/plain\r\nBcc: x@evil.test", "a/" + "b" * 300]
)
def test_an_attachment_content_type_is_one_short_token(content_type: str) -> None:
    data = {"owner": "o", "identity": "a@example.com", "to": ["b@example.org"], "text": "x"}
    attachment = {"filename": "f.txt", "content": "eA==", "content_type": content_type}
    with pytest.raises(InvalidJob) as refused:
        parse_job(data | {"attachments": [attachment]})
    assert refused.value.errors[0].field == "attachments.0.content_type"


@pytest.mark.parametrize("setting", [("1h\n", "duration"), ("150/1m\n", "rate")])
def test_settings_patterns_match_the_whole_value(setting: tuple[str, str]) -> None:
    from config.limits import parse_rate
    from config.units import parse_duration

    value, kind = setting
    parse = parse_duration if kind == "duration" else parse_rate
    assert parse(value) == parse(value.strip())  # white space around a value is allowed
    with pytest.raises(ValueError):
        parse(value.strip() + "\nx")


@pytest.mark.parametrize(
    ("name", "value", "literal"),
    [
        ("List-Id", "Café news <news.cafe.example>", b"<news.cafe.example>"),
        ("List-Unsubscribe", "<https://news.example/u?t=?abc>", b"<https://news.example/u?t=?abc>"),
        ("X-Team", "Zoë  Müller <team@example.com> (Köln)", b"<team@example.com>"),
        ("References", "<a=?b@example.com> <c@example.com>", b"<a=?b@example.com> <c@example.com>"),
    ],
)
def test_an_extra_header_encodes_only_the_words_readers_cannot_take(
    name: str, value: str, literal: bytes
) -> None:
    # a structured field turned into encoded words as a whole would hide its <...> from readers;
    # the words around them are encoded one run at a time, and read back as given
    job = parse_job(
        {
            "owner": "o",
            "identity": "a@example.com",
            "to": ["b@example.org"],
            "text": "x",
            "headers": {name: value},
        }
    )
    built = build_message(job, domain="d.test").data
    assert_wire_clean(built)
    assert literal in built.split(b"\r\n\r\n", 1)[0]
    msg = email.message_from_bytes(built, policy=email.policy.default)
    assert str(msg[name]) == value
