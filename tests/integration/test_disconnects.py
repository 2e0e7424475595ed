"""A client that goes away frees its place in the engine at once, streamed or not: the running
count drops to zero long before the request could have finished, and vLLM generated only a
fraction of the tokens it was asked for (it counts aborted requests nowhere else). And the
server never leaves first: an idle keep-alive connection outlives the clients' own pool expiry."""

from __future__ import annotations

import socket
import time
from urllib.parse import urlsplit

import httpx
import pytest

pytestmark = pytest.mark.integration

LONG = {"prompt": "The cat sees", "max_tokens": 400}
ASKED = 8 * 400  # n=8 choices


def _series(server, name: str, **labels: str) -> float:
    text = httpx.get(f"{server.url}/metrics", timeout=30).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _settles(server, tokens_before: float) -> None:
    """Nothing runs any more, and far fewer tokens were made than the 8 × 400 asked for."""
    deadline = time.monotonic() + 120
    while _series(server, "vllm:num_requests_running") > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    made = _series(server, "vllm:generation_tokens_total") - tokens_before
    assert made < ASKED / 2, f"{made} of {ASKED} tokens generated for a client that had left"


def test_a_stream_whose_client_leaves_is_aborted(server):
    before = _series(server, "vllm:generation_tokens_total")
    body = {"model": server.base_name, "stream": True, "n": 8, "temperature": 1.0, "seed": 1, **LONG}
    with httpx.stream("POST", f"{server.url}/v1/completions", json=body, timeout=60) as r:
        assert r.status_code == 200
        next(r.iter_lines())  # the first token is out: the request is running
    _settles(server, before)


def test_a_whole_response_whose_client_leaves_is_aborted(server):
    before = _series(server, "vllm:generation_tokens_total")
    body = {"model": server.base_name, "n": 8, "temperature": 1.0, "seed": 1, **LONG}
    with pytest.raises(httpx.ReadTimeout):  # 8 × 400 tokens take seconds; leave after 0.5 s
        httpx.post(f"{server.url}/v1/completions", json=body, timeout=httpx.Timeout(60, read=0.5))
    _settles(server, before)
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 200


def test_an_idle_connection_outlives_the_clients_pool_expiry(server):
    """httpx and `openai` reuse a pooled connection for 5 s: had the server closed it first (uvicorn's
    default is also 5 s), a request sent just then would fail with a read error, and a POST is not retried."""
    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert _response(sock).startswith(b"HTTP/1.1 200")
        time.sleep(7)
        sock.setblocking(False)
        with pytest.raises(BlockingIOError):  # b"" here would mean the server had closed it
            sock.recv(1, socket.MSG_PEEK)
        sock.setblocking(True)
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
        assert _response(sock).startswith(b"HTTP/1.1 200")


def _response(sock: socket.socket) -> bytes:
    """One whole HTTP response: headers, then `content-length` bytes of body (which may come in
    a later packet; a byte left unread would look like data waiting on the idle connection)."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(4096)
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")))
    while len(body) < length:
        body += sock.recv(4096)
    return head + b"\r\n\r\n" + body
