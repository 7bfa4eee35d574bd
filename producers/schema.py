"""The JSON Schema of ``SendJob`` for services that are not written in Python.

``python -m producers.schema > docs/sendjob.schema.json`` regenerates it; a test keeps it current.
"""

from __future__ import annotations

import json
from typing import Any

from producers.job import SendJob


def sendjob_schema() -> dict[str, Any]:
    """The JSON Schema of a job as producers submit it."""
    schema = SendJob.model_json_schema(mode="validation")
    schema["$id"] = "https://maildispatch.invalid/schemas/sendjob.schema.json"
    schema["description"] = (
        "One message to deliver. Celery message: task maildispatch.deliver.<channel> on queue "
        "mail.<channel>, args [[job, ...]] (a batch of 1..N jobs of one channel), JSON serializer."
    )
    return schema


if __name__ == "__main__":
    print(json.dumps(sendjob_schema(), indent=2, sort_keys=True))
