"""A client that goes away frees its place in the engine at once, streamed or not: the running
count drops to zero long before the request could have finished, and vLLM generated only a
fraction of the tokens it was asked for (it counts aborted requests nowhere else)."""

from __future__ import annotations

import time

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
