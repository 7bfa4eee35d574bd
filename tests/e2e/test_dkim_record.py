"""``maildispatch dkim record``: what to publish in DNS, verified by dkimpy against our signer."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from tests.support.env import SECRET
from tests.support.services import REPO


def key_file(tmp_path: Path, algorithm: str) -> Path:
    path = tmp_path / f"{algorithm}.key"
    if algorithm == "rsa":
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    else:
        seed = ed25519.Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        path.write_bytes(base64.b64encode(seed))
    return path


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_record_is_printed_and_self_checked(tmp_path: Path, algorithm: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_")}
    env |= {
        "MAILDISPATCH_SECRET_KEY": SECRET,
        "MAILDISPATCH_MSC_DOMAIN": "mail.operator.test",
        "MAILDISPATCH_DKIM_PRIVATE_KEY_FILE": str(key_file(tmp_path, algorithm)),
        "MAILDISPATCH_DKIM_SELECTOR": "md2026",
    }
    out = subprocess.run(
        [sys.executable, "-m", "producers.cli", "dkim", "record", "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["name"] == "md2026._domainkey.mail.operator.test"
    assert result["value"].startswith(f"v=DKIM1; k={algorithm}; p=")
    assert result["verified"] is True


def test_unconfigured_dkim_is_reported(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAILDISPATCH_")}
    env["MAILDISPATCH_SECRET_KEY"] = SECRET
    out = subprocess.run(
        [sys.executable, "-m", "producers.cli", "dkim", "record"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "not configured" in out.stdout
