"""kombu's ``json`` serializer through orjson (config/celery.py): plain JSON, kombu's semantics."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

from kombu.serialization import dumps, loads

from config.celery import use_orjson


def roundtrip(obj: object) -> tuple[str, object]:
    use_orjson()
    content_type, encoding, payload = dumps(obj, serializer="json")
    assert content_type == "application/json"
    return payload, loads(payload.encode(), content_type, encoding)


def test_a_batch_is_plain_json_any_client_reads() -> None:
    batch = [[{"id": "j1", "to": [{"address": "a@example.com"}], "subject": "héllo ✉"}], {}, {}]
    payload, back = roundtrip(batch)
    assert json.loads(payload) == batch
    assert back == batch


def test_what_kombu_types_still_comes_back_typed() -> None:
    obj = {"when": datetime(2026, 1, 2, 3, 4, 5), "raw": b"\x00\xff", "n": Decimal("1.5")}
    payload, back = roundtrip(obj)
    assert '"__type__"' in payload
    assert back == {"when": datetime(2026, 1, 2, 3, 4, 5), "raw": b"\x00\xff", "n": Decimal("1.5")}


def test_what_orjson_cannot_encode_falls_back_to_kombu() -> None:
    payload, back = roundtrip({1: 2**70})
    assert json.loads(payload) == {"1": 2**70}
    assert back == {"1": float(2**70)}


def test_memoryview_and_str_bodies() -> None:
    use_orjson()
    for body in (memoryview(b'{"a": [1]}'), bytearray(b'{"a": [1]}'), '{"a": [1]}'):
        assert loads(body, "application/json", "utf-8") == {"a": [1]}
