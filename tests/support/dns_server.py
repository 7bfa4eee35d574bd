"""A small authoritative DNS server on loopback (UDP and TCP, one port), answering from a dict:
the tests publish a sending domain's records in it, as its owner would at their DNS host. The
code under test reaches it through ``MAILDISPATCH_DNS_NAMESERVERS`` only (and dkimpy's
``dnsfunc`` hook, standing in for a receiver's resolver)."""

from __future__ import annotations

import socketserver
import struct
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
from dns.rdtypes.ANY.CNAME import CNAME
from dns.rdtypes.ANY.TXT import TXT

from tests.support.services import free_port


class DnsServer:
    """``publish(name, type, value)``, ``remove(name)``; started on a free loopback port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.records: dict[tuple[str, str], list[str]] = {}
        self.lock = threading.Lock()
        server = self

        class Udp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                sock.sendto(server.answer(data, tcp=False), self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                head = self.request.recv(2)
                if len(head) < 2:
                    return
                (size,) = struct.unpack("!H", head)
                data = b""
                while len(data) < size:
                    chunk = self.request.recv(size - len(data))
                    if not chunk:
                        return
                    data += chunk
                wire = server.answer(data, tcp=True)
                self.request.sendall(struct.pack("!H", len(wire)) + wire)

        self._udp = socketserver.ThreadingUDPServer(("127.0.0.1", self.port), Udp)
        self._tcp = socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)
        for s in (self._udp, self._tcp):
            s.daemon_threads = True

    @property
    def nameserver(self) -> str:
        """``MAILDISPATCH_DNS_NAMESERVERS``."""
        return f"127.0.0.1:{self.port}"

    def start(self) -> DnsServer:
        """Serve in threads."""
        for s in (self._udp, self._tcp):
            threading.Thread(target=s.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        for s in (self._udp, self._tcp):
            s.shutdown()
            s.server_close()

    def publish(self, name: str, rtype: str, value: str) -> None:
        """Add a record (a TXT value longer than 255 bytes is split into strings, as DNS hosts
        do)."""
        with self.lock:
            self.records.setdefault((name.lower().rstrip("."), rtype), []).append(value)

    def clear(self) -> None:
        """Forget every record."""
        with self.lock:
            self.records.clear()

    def lookup(self, name: str, rtype: str) -> list[str]:
        """What is published."""
        with self.lock:
            return list(self.records.get((name.lower().rstrip("."), rtype), []))

    def answer(self, data: bytes, tcp: bool) -> bytes:
        """The wire answer to a wire query."""
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        rtype = dns.rdatatype.to_text(question.rdtype)
        with self.lock:
            known = any(n == name for n, _ in self.records)
            values = list(self.records.get((name, rtype), []))
            alias = self.records.get((name, "CNAME"), [])
        if not known:
            response.set_rcode(dns.rcode.NXDOMAIN)
        rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, question.rdtype)
        if rtype == "TXT":
            for value in values:
                raw = value.encode()
                rrset.add(
                    TXT(
                        dns.rdataclass.IN,
                        dns.rdatatype.TXT,
                        [raw[i : i + 255] for i in range(0, len(raw), 255)],
                    ),
                    ttl=60,
                )
        elif alias:  # a CNAME answers every type asked at its name
            target = dns.name.from_text(alias[0])
            rrset = dns.rrset.RRset(question.name, dns.rdataclass.IN, dns.rdatatype.CNAME)
            rrset.add(CNAME(dns.rdataclass.IN, dns.rdatatype.CNAME, target), ttl=60)
        if len(rrset):
            response.answer.append(rrset)
        wire = response.to_wire()
        if not tcp and len(wire) > 512 and query.edns < 0:
            response.answer.clear()
            response.flags |= dns.flags.TC
            wire = response.to_wire()
        return wire
