"""The ingest time limits: refused unless Celery can enforce them as written."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from config.settings import Settings


@pytest.mark.parametrize(
    ("soft", "hard"),
    [("30s", "2s"), ("60s", "60s"), ("0.4s", "10s"), ("0", "10s"), ("2.4s", "2.2s")],
)
def test_a_soft_limit_not_below_the_hard_one_is_refused(soft: str, hard: str) -> None:
    with pytest.raises(ValidationError, match="SOFT_TIME_LIMIT must be at least 1s and below"):
        Settings(bounce_ingest_soft_time_limit=soft, bounce_ingest_time_limit=hard)  # type: ignore[arg-type]


@pytest.mark.parametrize(("soft", "hard"), [("1s", "2s"), ("30s", "1m"), ("5m", "10m")])
def test_ordered_limits_are_kept(soft: str, hard: str) -> None:
    s = Settings(bounce_ingest_soft_time_limit=soft, bounce_ingest_time_limit=hard)  # type: ignore[arg-type]
    assert 1 <= s.bounce_ingest_soft_time_limit < s.bounce_ingest_time_limit
