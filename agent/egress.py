"""Where ``upload-diagnostics`` may connect (issue 10 item 5): the URL comes from the cloud, so
without these checks a job could make the gateway probe its own LAN, the cloud metadata address
or any port, and read the answer from the failure text.

- The host must match a pattern of the LOCAL allowlist (``remote.diagnostics_upload_hosts``,
  default: S3 endpoints); the port must be 443 unless the pattern itself names another port
  (``host:port``: for an on-prem server or a test, set in the file, never from the cloud).
- The name is resolved once; every address that is loopback, private, link-local, multicast,
  reserved, unspecified or otherwise not global (IPv4 and IPv6, v4-mapped, 6to4, Teredo and NAT64
  forms judged by the IPv4 address inside) is dropped unless it lies in a LOCAL
  ``remote.diagnostics_upload_networks`` entry. No address left: refused.
- The connection goes to a checked address (no second lookup a rebinding DNS server could
  answer differently); TLS is still verified against the host name."""

from __future__ import annotations

import fnmatch
import ipaddress
import socket
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
GetAddrInfo = Callable[..., list[tuple[Any, ...]]]

HTTPS_PORT = 443
# S3 endpoints a presigned URL names: virtual-hosted and path style, regional, dual-stack, the
# legacy s3-<region> form, and the China partition.
DEFAULT_UPLOAD_HOSTS: tuple[str, ...] = (
    "s3.amazonaws.com", "*.s3.amazonaws.com",
    "s3.*.amazonaws.com", "*.s3.*.amazonaws.com",
    "s3-*.amazonaws.com", "*.s3-*.amazonaws.com",
    "s3.*.amazonaws.com.cn", "*.s3.*.amazonaws.com.cn",
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class EgressRefused(Exception):
    """The upload target is not allowed here. The message names only what the URL itself says
    (safe to report to the cloud) for host and port refusals; address refusals stay in the log."""


def pattern_error(pattern: str) -> str | None:
    """Why an allowlist entry is malformed, or None."""
    host, _, port = pattern.partition(":")
    if not host or any(c not in "abcdefghijklmnopqrstuvwxyz0123456789.-*" for c in host.lower()):
        return f"{pattern!r}: a host pattern uses letters, digits, '.', '-' and '*'"
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        return f"{pattern!r}: the port must be 1..65535"
    return None


def allowed_target(url: str, patterns: Sequence[str]) -> tuple[str, int]:
    """(host, port) of an https ``url`` the allowlist admits, else EgressRefused."""
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname:
        raise EgressRefused("the upload URL must be https:// with a host")
    host = parts.hostname.lower().rstrip(".")
    try:
        port = parts.port or HTTPS_PORT
    except ValueError:
        raise EgressRefused("the upload URL has an invalid port") from None
    for pattern in patterns:
        p_host, _, p_port = pattern.lower().partition(":")
        if fnmatch.fnmatchcase(host, p_host) and port == (int(p_port) if p_port else HTTPS_PORT):
            return host, port
    if any(fnmatch.fnmatchcase(host, p.lower().partition(":")[0]) for p in patterns):
        raise EgressRefused(f"port {port} is not allowed for uploads (https on {HTTPS_PORT} only)")
    raise EgressRefused(f"host {host[:80]!r} is not on this device's upload allowlist "
                        "(remote.diagnostics_upload_hosts)")


def _embedded_v4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


def forbidden(addr: IPAddress) -> str | None:
    """Why ``addr`` is no place for an upload (a name for the log), or None for a global unicast
    address."""
    if isinstance(addr, ipaddress.IPv6Address):
        inner = _embedded_v4(addr)
        if inner is not None:
            why = forbidden(inner)
            return f"{why} (inside {addr})" if why else None
    for name in ("loopback", "unspecified", "link_local", "multicast", "private", "reserved"):
        if getattr(addr, f"is_{name}"):
            return name.replace("_", "-")
    if not addr.is_global:
        return "not global"
    return None


def resolve(
    host: str, port: int, networks: Sequence[IPNetwork], getaddrinfo: GetAddrInfo = socket.getaddrinfo
) -> list[str]:
    """The addresses of ``host`` an upload may connect to, in resolver order; EgressRefused when
    none is left (the message is for the log only: it tells what the name resolves to)."""
    try:
        infos = getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise EgressRefused(f"cannot resolve {host}: {exc}") from None
    allowed: list[str] = []
    refused: list[str] = []
    for info in infos:
        text = str(info[4][0]).split("%", 1)[0]  # drop an IPv6 scope id
        addr = ipaddress.ip_address(text)
        why = forbidden(addr)
        if why is None or any(addr in net for net in networks if net.version == addr.version):
            if text not in allowed:
                allowed.append(text)
        else:
            refused.append(f"{text} ({why})")
    if not allowed:
        raise EgressRefused(f"{host} resolves to no address an upload may reach: {', '.join(refused) or 'none'}")
    return allowed
