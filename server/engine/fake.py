"""A deterministic in-memory engine for unit tests of the layers above the engine seam.

Never a stand-in for vLLM in integration tests. Text is a pure function of (adapter,
prompt tokens, sampling), so tests can tell adapters apart and check plumbing exactly.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

from loramux.adapters.errors import InvalidRequest

from .protocol import AdapterSpec, ChoiceDelta, EngineUnavailable, GenerateChunk, GenerateRequest

_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


class FakeEngine:
    def __init__(self, base_name: str = "tiny", max_model_len: int = 128) -> None:
        self.base_name = base_name
        self.max_model_len = max_model_len
        self.healthy = True
        self.aborted: list[str] = []
        self._adapters: dict[str, AdapterSpec] = {}
        self._loaded: set[str] = set()

    def encode(self, text: str) -> list[int]:
        return [ord(c) % 1000 for c in text]  # one token per character

    def render_chat(self, messages: list[dict[str, str]]) -> list[int]:
        return self.encode("".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>")

    def _word(self, request: GenerateRequest, choice: int, step: int) -> str:
        key = f"{request.adapter}|{list(request.prompt_token_ids)}|{request.sampling.seed}|{choice}|{step}"
        return _WORDS[hashlib.sha256(key.encode()).digest()[0] % len(_WORDS)]

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
        if not self.healthy:
            raise EngineUnavailable("fake engine is down")
        if request.adapter is not None:
            self._loaded.add(request.adapter)
        s = request.sampling
        texts = [[f" {self._word(request, c, i)}" for i in range(s.max_tokens)] for c in range(s.n)]
        cut = [len(t) for t in texts]
        for c, words in enumerate(texts):  # honour stop strings like vLLM: cut before the stop
            for i, w in enumerate(words):
                if any(stop in w for stop in s.stop):
                    cut[c] = i
                    break
        reasons = ["stop" if cut[c] < s.max_tokens else "length" for c in range(s.n)]
        prompt = len(request.prompt_token_ids)
        if not request.stream:
            yield GenerateChunk(prompt, [ChoiceDelta(c, "".join(texts[c][:cut[c]]), cut[c], reasons[c])
                                         for c in range(s.n)])
            return
        for step in range(max(cut) + 1):
            await asyncio.sleep(0)
            deltas = []
            for c in range(s.n):
                if step < cut[c]:
                    last = step == cut[c] - 1
                    deltas.append(ChoiceDelta(c, texts[c][step], 1, reasons[c] if last else None))
                elif step == cut[c] == 0:
                    deltas.append(ChoiceDelta(c, "", 0, reasons[c]))
            if deltas:
                yield GenerateChunk(prompt, deltas)

    async def add_adapter(self, adapter: AdapterSpec) -> None:
        if not (adapter.path / "adapter_config.json").is_file():
            raise InvalidRequest(f"no adapter_config.json in {adapter.path}", param="lora_path")
        self._adapters[adapter.name] = adapter
        self._loaded.add(adapter.name)

    async def remove_adapter(self, name: str) -> bool:
        self._loaded.discard(name)
        return self._adapters.pop(name, None) is not None

    def adapters(self) -> list[AdapterSpec]:
        return list(self._adapters.values())

    def has_adapter(self, name: str) -> bool:
        return name in self._adapters

    async def list_loaded(self) -> list[str]:
        return sorted(self._loaded & set(self._adapters))

    async def check_health(self) -> None:
        if not self.healthy:
            raise EngineUnavailable("fake engine is down")

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)

    def shutdown(self) -> None:
        self.healthy = False
