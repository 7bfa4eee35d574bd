"""What a suppression is, as the CLI and the HTTP API take it (without the HTTP layer's imports)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from producers.job import EmailAddress, Line200


class SuppressionIn(BaseModel):
    """An address to suppress (e.g. its person unsubscribed)."""

    model_config = ConfigDict(extra="forbid")

    owner: Line200
    address: EmailAddress
    reason: Line200 = "manual"
