"""Can a download server be reached at all? One quick probe before a download that would otherwise retry.

huggingface_hub retries a request that cannot connect five times with growing pauses (1 + 2 + 4 + 8 + 8 s,
each announced by a warning), and `avseg annotate` without a checkpoint wants four models: on a machine without
network the command spent two minutes printing retry warnings before its one-line error. So before any hub or
open_clip download, `unreachable_reason` opens one TCP connection to the server (name lookup and connection
each bounded by a few seconds) and the caller fails at once, with the same one-line message that says what to
fetch and where to put it, when it cannot.

The verdict is kept per (host, port) for the life of the process, so the four models cost one probe. With a
proxy configured (HTTPS_PROXY, HTTP_PROXY or ALL_PROXY) the probe is skipped: the proxy decides what is
reachable, and the download runs as before.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from urllib.parse import urlsplit

DEFAULT_HUB_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 3.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy")

_verdicts: dict[tuple[str, int], str | None] = {}
_verdicts_lock = threading.Lock()


def hub_endpoint() -> str:
    """The Hugging Face endpoint downloads go to (huggingface_hub's, which honours HF_ENDPOINT)."""
    try:
        from huggingface_hub import constants

        return str(constants.ENDPOINT)
    except ImportError:  # pragma: no cover - huggingface_hub comes with open_clip and transformers
        return os.environ.get("HF_ENDPOINT", DEFAULT_HUB_ENDPOINT)


def forget_verdicts() -> None:
    """Probe again next time (the network may have come back; tests start from a clean slate)."""
    with _verdicts_lock:
        _verdicts.clear()


def _resolve(host: str, port: int, timeout: float) -> list[tuple]:
    """`socket.getaddrinfo` bounded by `timeout` (the system resolver itself may wait far longer)."""
    result: dict[str, object] = {}

    def lookup() -> None:
        try:
            result["addresses"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            result["error"] = error

    thread = threading.Thread(target=lookup, name="avseg-dns-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise TimeoutError(f"looking up {host} took more than {timeout:g} s")
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return result["addresses"]  # type: ignore[return-value]


def _probe(host: str, port: int, timeout: float) -> str | None:
    try:
        addresses = _resolve(host, port, timeout)
    except TimeoutError as error:
        return f"{error} (no network?)"
    except OSError:
        return f"{host} cannot be resolved (no network?)"
    last_error: OSError | None = None
    deadline = time.monotonic() + timeout  # all addresses together (a black-holed network never refuses)
    for family, kind, protocol, _, address in addresses:
        left = deadline - time.monotonic()
        if left <= 0:
            last_error = last_error or TimeoutError()
            break
        try:  # an address family this machine lacks (IPv6 off) fails already here
            with socket.socket(family, kind, protocol) as connection:
                connection.settimeout(left)
                connection.connect(address)
                return None
        except OSError as error:
            last_error = error
    if last_error is None:
        why = "no address"
    elif isinstance(last_error, (socket.timeout, TimeoutError)):
        why = "timed out"
    else:
        why = (last_error.strerror or str(last_error) or "failed").lower()
    return f"{host}:{port} cannot be reached ({why})"


def unreachable_reason(url: str | None = None, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why `url`'s server cannot be reached, or None when a TCP connection to it opens.

    Args:
        url: an http(s) URL; None = the Hugging Face endpoint (`hub_endpoint`).
        timeout: seconds for the name lookup, and again for the connection attempts (all addresses together).

    Returns:
        None when reachable, when a proxy is configured (not probed) or when `url` has no host; otherwise a
        short reason such as "huggingface.co cannot be resolved (no network?)".
    """
    if any(os.environ.get(variable) for variable in PROXY_VARIABLES):
        return None
    parts = urlsplit(url or hub_endpoint())
    try:
        port = parts.port or (80 if parts.scheme == "http" else 443)
    except ValueError:  # a malformed port: the download itself reports the URL
        return None
    if not parts.hostname:
        return None
    key = (parts.hostname, port)
    with _verdicts_lock:
        if key in _verdicts:
            return _verdicts[key]
    verdict = _probe(parts.hostname, port, timeout)
    with _verdicts_lock:
        _verdicts[key] = verdict
    return verdict
