"""A throwaway Dovecot IMAP server (Debian's dovecot-imapd) on free loopback ports.

Everything lives in one temporary folder: configuration, a self-signed certificate for
127.0.0.1, a passwd-file with one user, and the Maildir. ``dovecot -F`` runs in the foreground
as a child process and is stopped with the test.
"""

from __future__ import annotations

import datetime
import imaplib
import ipaddress
import os
import pwd
import shutil
import ssl
import subprocess
import tempfile
from pathlib import Path

from tests.support.services import free_port, need, port_open, wait_for

USER = "bounces"
PASSWORD = "imap-test-password-7f3a"


def _binary() -> str | None:
    return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/sbin")


def _self_signed(cert: Path, key: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key.chmod(0o600)


class Dovecot:
    """A running Dovecot with one user; ``cafile`` verifies its certificate."""

    def __init__(self) -> None:
        binary = _binary()
        need("dovecot (Debian package dovecot-imapd)", binary is not None)
        assert binary is not None
        self.binary = binary
        # not under pytest's tmp_path: the mail user must be able to reach its Maildir
        self.dir = Path(tempfile.mkdtemp(prefix="md-dovecot-"))
        self.dir.chmod(0o755)
        self.imap_port = free_port()
        self.imaps_port = free_port()
        self.cafile = self.dir / "cert.pem"
        self.proc: subprocess.Popen[bytes] | None = None

    def _conf(self) -> str:
        if os.geteuid() == 0:  # drop to Debian's service users, keep mail as nobody
            internal, login, mail_user = "dovecot", "dovenull", "nobody"
        else:  # an unprivileged run: every process is the current user
            internal = login = mail_user = pwd.getpwuid(os.geteuid()).pw_name
        mail = self.dir / "mail"
        mail.mkdir(exist_ok=True)
        shutil.chown(mail, user=mail_user)
        d = self.dir
        return f"""
protocols = imap
listen = 127.0.0.1
base_dir = {d}/run
state_dir = {d}/state
instance_name = md-dovecot-{self.imaps_port}
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
ssl = yes
ssl_cert = <{d}/cert.pem
ssl_key = <{d}/key.pem
ssl_min_protocol = TLSv1.2
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {internal}
default_internal_group = {internal}
default_login_user = {login}
mail_location = maildir:{mail}/%u
first_valid_uid = 1
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={pwd.getpwnam(mail_user).pw_gid} home={mail}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {self.imap_port}
  }}
  inet_listener imaps {{
    port = {self.imaps_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
}}
"""

    def start(self) -> Dovecot:
        """Write the configuration and start; returns when IMAPS answers."""
        for sub in ("run", "state"):
            (self.dir / sub).mkdir(exist_ok=True)
        _self_signed(self.cafile, self.dir / "key.pem")
        (self.dir / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        conf = self.dir / "dovecot.conf"
        conf.write_text(self._conf())
        log = (self.dir / "stdout.log").open("wb")
        self.proc = subprocess.Popen(
            [self.binary, "-F", "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        wait_for(
            lambda: port_open("127.0.0.1", self.imaps_port) or self.proc.poll() is not None,  # type: ignore[union-attr]
            20,
            what="dovecot listening",
        )
        if self.proc.poll() is not None:
            raise AssertionError(f"dovecot exited: {self.logs()}")
        return self

    def logs(self) -> str:
        """Dovecot's own log and its stdout."""
        parts = [p.read_text(errors="replace") for p in self.dir.glob("*.log") if p.exists()]
        return "\n".join(parts)[-4000:]

    def stop(self) -> None:
        """Stop Dovecot and remove its folder."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, mailbox: str = "INBOX", *, tls: bool = True) -> str:
        """The ``--imap`` URL of the mailbox."""
        if tls:
            return f"imaps://{USER}@127.0.0.1:{self.imaps_port}/{mailbox}"
        return f"imap://{USER}@127.0.0.1:{self.imap_port}/{mailbox}"

    def client(self) -> imaplib.IMAP4_SSL:
        """A logged-in IMAP client (the test's view of the mailbox)."""
        ctx = ssl.create_default_context(cafile=str(self.cafile))
        conn = imaplib.IMAP4_SSL("127.0.0.1", self.imaps_port, ssl_context=ctx, timeout=20)
        conn.login(USER, PASSWORD)
        return conn
