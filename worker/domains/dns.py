"""What DNS says about a sending domain's records (dnspython).

The resolver is the system's unless ``MAILDISPATCH_DNS_NAMESERVERS`` names servers
(``ip:port``, the tests' own authoritative server). A name that does not exist, has no record
of the type, or does not answer in time reads as no record: the record is then ``missing``.
"""

from __future__ import annotations

import dns.exception
import dns.nameserver
import dns.resolver

from config.settings import Settings

TIMEOUT = 5.0


def resolver(settings: Settings) -> dns.resolver.Resolver:
    """The system's resolver, or one asking ``MAILDISPATCH_DNS_NAMESERVERS`` only."""
    if not settings.dns_nameservers:
        found = dns.resolver.Resolver()
    else:
        found = dns.resolver.Resolver(configure=False)
        servers: list[str | dns.nameserver.Nameserver] = []
        for item in settings.dns_nameservers:
            host, _, port = item.strip().rpartition(":")
            if not host:  # "ip" alone
                host, port = port, "53"
            servers.append(dns.nameserver.Do53Nameserver(host.strip("[]"), int(port)))
        found.nameservers = servers
    found.lifetime = TIMEOUT
    found.cache = None  # a record just published is seen at the next check
    return found


def txt(res: dns.resolver.Resolver, name: str) -> list[str]:
    """Every TXT record at ``name``, each its strings joined (long DKIM keys span several)."""
    try:
        answer = res.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
        return []
    except dns.exception.Timeout:
        return []
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def cname(res: dns.resolver.Resolver, name: str) -> str | None:
    """The target of the CNAME at ``name`` (lowercase, no final dot), if there is one."""
    try:
        answer = res.resolve(name, "CNAME")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.NoNameservers):
        return None
    except dns.exception.Timeout:
        return None
    return str(answer[0].target).rstrip(".").lower()
