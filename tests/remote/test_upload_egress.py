"""upload-diagnostics reaches only what the local allowlist admits (issue 10 item 5): host
patterns, https on 443, addresses checked after resolution and connected to as checked, TLS
verified against the host name, and a generic reason to the cloud."""

from __future__ import annotations

import asyncio
import datetime as dt
import http.server
import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent import egress
from agent.remote.jobs.actions import ActionEnv, diagnostics
from agent.runtime import Agent
from tests.remote.conftest import create_job, final_execution, https_upload_server, running, upload_allowed

UPLOAD_FAILED = "upload failed (details in the device log)"


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "0.0.0.0", "224.0.0.1",
    "240.0.0.1", "255.255.255.255", "100.64.0.1", "::1", "::", "fe80::1", "fc00::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1", "2002:7f00:1::", "2002:a00:1::",
    "64:ff9b::a9fe:a9fe", "2001:db8::1",
])
def test_non_public_addresses_are_refused(address: str) -> None:
    assert egress.forbidden(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["52.216.1.1", "2600:1f18::1", "::ffff:52.216.1.1", "64:ff9b::34d8:101"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert egress.forbidden(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(("url", "ok"), [
    ("https://my-bucket.s3.amazonaws.com/diag?X-Amz-Signature=a", True),
    ("https://my-bucket.s3.eu-west-1.amazonaws.com/k", True),
    ("https://s3.dualstack.us-east-1.amazonaws.com/bucket/k", True),
    ("https://MY-BUCKET.S3.AMAZONAWS.COM./k", True),
    ("https://my-bucket.s3.amazonaws.com:443/k", True),
    ("https://my-bucket.s3.amazonaws.com:8443/k", False),
    ("https://s3.amazonaws.com.evil.example/k", False),
    ("https://169.254.169.254/latest/meta-data", False),
    ("https://localhost/k", False),
    ("http://my-bucket.s3.amazonaws.com/k", False),
])
def test_default_allowlist_is_s3_on_443(url: str, ok: bool) -> None:
    hosts = list(egress.DEFAULT_UPLOAD_HOSTS)
    if ok:
        assert egress.allowed_target(url, hosts)[1] == 443
    else:
        with pytest.raises(egress.EgressRefused):
            egress.allowed_target(url, hosts)


def _infos(*addresses: str) -> Any:
    def getaddrinfo(host: str, port: int, **_kw: Any) -> list[tuple[Any, ...]]:
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
                for a in addresses]
    return getaddrinfo


def test_resolution_keeps_only_checked_addresses() -> None:
    assert egress.resolve("h", 443, [], _infos("10.0.0.1", "52.216.1.1")) == ["52.216.1.1"]
    with pytest.raises(egress.EgressRefused, match=r"169\.254\.169\.254 \(link-local\)"):
        egress.resolve("h", 443, [], _infos("169.254.169.254", "::ffff:127.0.0.1"))
    nets = [ipaddress.ip_network("10.0.0.0/8")]
    assert egress.resolve("h", 443, nets, _infos("10.0.0.1", "192.168.0.1")) == ["10.0.0.1"]
    with pytest.raises(egress.EgressRefused, match="cannot resolve"):
        egress.resolve("does-not-exist.invalid", 443, [])


def _server_pair(tmp: Path, name: str) -> tuple[Path, Path, Path]:
    """A throwaway CA and a server certificate for ``name`` only."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "egress test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=1))
          .not_valid_after(now + dt.timedelta(hours=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1)).not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tmp / "ca.pem", tmp / "cert.pem", tmp / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


class _Sink(http.server.BaseHTTPRequestHandler):
    received: list[bytes]

    def do_PUT(self) -> None:
        type(self).received.append(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def named_server(tmp_path: Path) -> Iterator[tuple[int, ssl.SSLContext, type[_Sink]]]:
    """An HTTPS server on loopback whose certificate names only ``upload.test`` (a name no DNS
    resolves: only the agent's own checked resolution can lead to it)."""
    ca, cert, key = _server_pair(tmp_path, "upload.test")
    handler: type[_Sink] = type("Sink", (_Sink,), {"received": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    sctx.load_cert_chain(cert, key)
    server.socket = sctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1], ssl.create_default_context(cafile=str(ca)), handler
    finally:
        server.shutdown()
        server.server_close()


def test_connects_to_the_checked_address_and_verifies_tls_against_the_name(named_server) -> None:
    port, ctx, handler = named_server
    calls: list[str] = []

    def resolve() -> list[str]:
        calls.append("resolve")
        return ["127.0.0.1"]

    code = asyncio.run(diagnostics._Put(f"https://upload.test:{port}/k", b"{}", ctx, resolve).start())
    assert code == 200 and handler.received == [b"{}"] and calls == ["resolve"]
    # Same address, another name: the certificate does not match, nothing is sent.
    with pytest.raises(ssl.SSLCertVerificationError):
        asyncio.run(diagnostics._Put(f"https://other.test:{port}/k", b"{}", ctx, resolve).start())
    assert handler.received == [b"{}"]


def _job(admin, gateway, url: str) -> str:
    return create_job(admin, gateway.thing, {"action": "upload-diagnostics", "params": {"url": url}})


def test_upload_job_refusals(gateway, admin, remote_emulator, caplog) -> None:
    caplog.set_level(logging.INFO)
    handler: type[_Sink] = type("Sink", (_Sink,), {"received": []})
    with https_upload_server(remote_emulator, handler, "/diag?X-Amz-Signature=x") as (url, ctx):
        port = url.split(":")[2].split("/")[0]

        async def scenario() -> None:
            # Allowlisted by name but without the local network: the loopback address is refused
            # after resolution and the cloud learns nothing about it.
            agent = Agent(gateway.conf(remote={"diagnostics_upload_hosts": [f"localhost:{port}", "localhost"]}),
                          action_env=ActionEnv(https_context=ctx))
            async with running(agent):
                ex = await final_execution(admin, await asyncio.to_thread(_job, admin, gateway, url))
                assert ex["status"] == "FAILED" and ex["statusDetails"]["reason"] == UPLOAD_FAILED, ex
                assert any("loopback" in str(getattr(r, "error", "")) for r in caplog.records)
                # The default port only, unless the pattern names another.
                ex = await final_execution(admin, await asyncio.to_thread(
                    _job, admin, gateway, url.replace(f":{port}", ":8443")))
                assert ex["status"] == "REJECTED" and "443 only" in ex["statusDetails"]["reason"], ex
                # Not on the allowlist at all: the metadata service, a LAN host.
                for target in ("https://169.254.169.254/latest/meta-data/", "https://10.0.0.5/x"):
                    ex = await final_execution(admin, await asyncio.to_thread(_job, admin, gateway, target))
                    assert ex["status"] == "REJECTED" and "allowlist" in ex["statusDetails"]["reason"], ex
            # A closed port and an open one look the same to the cloud.
            closed = socket.socket()
            closed.bind(("127.0.0.1", 0))
            closed_port = closed.getsockname()[1]
            closed.close()
            allowed = upload_allowed(url)
            allowed["diagnostics_upload_hosts"].append(f"localhost:{closed_port}")
            agent = Agent(gateway.conf(remote=allowed), action_env=ActionEnv(https_context=ctx))
            async with running(agent):
                ex = await final_execution(admin, await asyncio.to_thread(
                    _job, admin, gateway, url.replace(f":{port}", f":{closed_port}")))
                assert ex["status"] == "FAILED" and ex["statusDetails"]["reason"] == UPLOAD_FAILED, ex
                ex = await final_execution(admin, await asyncio.to_thread(_job, admin, gateway, url))
                assert ex["status"] == "SUCCEEDED", ex

        asyncio.run(scenario())
    assert len(handler.received) == 1
