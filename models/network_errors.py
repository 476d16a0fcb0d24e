"""Telling "could not reach the server" apart from other failures of a download.

`is_network_error` looks through an exception's whole cause chain for the error types of urllib, sockets,
huggingface_hub and httpx that mean the hub / URL could not be reached. Used by the CLIP loading
(`models.ovavss.clip_model`), open_clip downloads (`models.clip_weights`) and `models.hub_models`.
"""

from __future__ import annotations

import socket
import urllib.error
from typing import Iterator


def _exception_chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def is_network_error(error: BaseException) -> bool:
    """An exception that means "could not reach the hub / URL", anywhere in the cause chain."""
    network_types: list[type] = [urllib.error.URLError, socket.gaierror, socket.timeout, ConnectionError, TimeoutError]
    try:
        from huggingface_hub import errors as hub_errors

        network_types += [hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled]
    except ImportError:  # pragma: no cover - huggingface_hub comes with open_clip
        pass
    for link in _exception_chain(error):
        if isinstance(link, tuple(network_types)):
            return True
        if type(link).__name__ in ("ConnectError", "ConnectTimeout", "ReadTimeout", "NetworkError"):
            return True
    return False
