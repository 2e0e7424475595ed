"""A deterministic in-memory engine for unit tests of the layers above the engine seam.

Never a stand-in for vLLM in integration tests. Text is a pure function of (adapter name
and folder, prompt tokens, sampling), so tests can tell adapters and versions apart and check
plumbing exactly; it has no queue, so `priority` changes nothing here. Like vLLM, a request whose adapter was unloaded loads it again from its path.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
from collections import OrderedDict
from collections.abc import AsyncIterator

from loramux.adapters.errors import InvalidRequest
from loramux.adapters.peft_format import CONFIG_FILE

from .protocol import (AdapterHandle, ChoiceDelta, EngineUnavailable, GenerateChunk, GenerateRequest, ParsedToolCall,
                       TokenLogprob)

_WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def _instance(schema: dict, word: str):
    """A small value following `schema` (enough of JSON Schema for the tests above the seam)."""
    if "anyOf" in schema:
        return _instance({**{k: v for k, v in schema.items() if k != "anyOf"}, **schema["anyOf"][0]}, word)
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type", "object")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: _instance(props[k], word) for k in schema.get("required", list(props))} or {"word": word}
    if kind == "array":
        return [_instance(schema.get("items", {"type": "string"}), word)] * schema.get("minItems", 1)
    return {"string": word, "integer": 1, "number": 1.5, "boolean": True, "null": None}[kind]


class FakeEngine:
    vocab_size = 1000
    bos_token_id = 1

    def __init__(self, base_name: str = "tiny", max_model_len: int = 128, max_loras: int = 4,
                 tool_parser: str | None = None) -> None:
        self.base_name = base_name
        self.tool_parser = tool_parser
        self.max_model_len = max_model_len
        self.max_loras = max_loras
        self.healthy = True
        self.loaded: set[int] = set()  # handle ids in memory, for tests to look at
        self.slots: OrderedDict[int, None] = OrderedDict()  # ids in a batch slot, least recent first
        self.pinned: set[int] = set()

    def encode(self, text: str) -> list[int]:
        return [ord(c) % self.vocab_size for c in text]  # one token per character

    def decode(self, token_ids: list[int]) -> str:
        return "".join(map(chr, token_ids))

    def render_chat(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        shown = "<tools>" + ",".join(t["function"]["name"] for t in tools) if tools else ""  # names: short
        calls = [json.dumps(m["tool_calls"]) if m.get("tool_calls") else "" for m in messages]
        return self.encode(shown + "".join(f"<{m['role']}>{m['content']}{c}" for m, c in zip(messages, calls))
                           + "<assistant>")

    def parse_tool_calls(self, text: str, tools: list[dict]) -> tuple[str | None, list[ParsedToolCall]]:
        """A fake parser: each `<call>{"name": ..., "arguments": {...}}` in the text is a call."""
        content, *calls = text.split("<call>")
        return content or None, [ParsedToolCall(c["name"], json.dumps(c["arguments"]))
                                 for c in map(json.loads, calls)]

    def _word(self, request: GenerateRequest, choice: int, step: int) -> str:
        a = request.adapter
        weights = f"{a.name}:{a.path}" if a else None
        key = f"{weights}|{list(request.prompt_token_ids)}|{request.sampling.seed}|{choice}|{step}"
        return _WORDS[hashlib.sha256(key.encode()).digest()[0] % len(_WORDS)]

    @staticmethod
    def _logprob(word: str, k: int) -> TokenLogprob:
        """The chosen word holds half the probability, the other words share the rest evenly."""
        rest = math.log(0.5 / (len(_WORDS) - 1))
        ranked = [(f" {word}", math.log(0.5))] + [(f" {w}", rest) for w in _WORDS if w != word]
        token = _WORDS.index(word) if word in _WORDS else len(_WORDS)  # a JSON answer's text is no word
        return TokenLogprob(token, f" {word}", math.log(0.5), tuple(ranked[:k]))

    def _prompt_logprobs(self, ids, k: int) -> list[TokenLogprob]:
        """Token t after any other has logprob -(1 + t % 7 / 10); it leads its own top list."""
        out = []
        for i, t in enumerate(ids):
            lp = None if i == 0 else -(1 + t % 7 / 10)
            out.append(TokenLogprob(t, chr(t), lp, () if lp is None else ((chr(t), lp),)[:k]))
        return out

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
        if not self.healthy:
            raise EngineUnavailable("fake engine is down")
        if any(not 0 <= t < self.vocab_size for t in request.prompt_token_ids):
            raise InvalidRequest(f"token ids must be in [0, {self.vocab_size})", param="prompt")
        if request.sampling.n > 1 and request.sampling.temperature == 0:  # as vLLM refuses it
            raise InvalidRequest("n must be 1 when using greedy sampling", param="n")
        if request.adapter is not None:
            if request.adapter.id not in self.loaded:
                await self.load(request.adapter)
            self._activate(request.adapter.id)
        s = request.sampling
        texts = [[f" {self._word(request, c, i)}" for i in range(s.max_tokens)] for c in range(s.n)]
        if s.json is not None:  # one token: a small JSON value that follows the schema
            schema = json.loads(s.json.schema or '{"type": "object"}')
            texts = [[json.dumps(_instance(schema, self._word(request, c, 0)), separators=(",", ":"))]
                     for c in range(s.n)]
        cut = [len(t) for t in texts]
        for c, words in enumerate(texts):  # honour stop strings like vLLM: cut before the stop
            for i, w in enumerate(words):
                if any(stop in w for stop in s.stop):
                    cut[c] = i
                    break
        reasons = ["stop" if cut[c] < s.max_tokens else "length" for c in range(s.n)]
        prompt = len(request.prompt_token_ids)
        prompt_lps = (None if s.prompt_logprobs is None
                      else self._prompt_logprobs(request.prompt_token_ids, s.prompt_logprobs))

        def lps(words: list[str]) -> list[TokenLogprob] | None:
            return None if s.logprobs is None else [self._logprob(w.strip(), s.logprobs) for w in words]

        if not request.stream:
            yield GenerateChunk(prompt, [ChoiceDelta(c, "".join(texts[c][:cut[c]]), cut[c], reasons[c],
                                                     lps(texts[c][:cut[c]])) for c in range(s.n)],
                                queue_s=0.0, first_token_s=0.0, prompt_logprobs=prompt_lps)
            return
        for step in range(max(cut) + 1):
            await asyncio.sleep(0)
            deltas = []
            for c in range(s.n):
                if step < cut[c]:
                    last = step == cut[c] - 1
                    deltas.append(ChoiceDelta(c, texts[c][step], 1, reasons[c] if last else None,
                                              lps([texts[c][step]])))
                elif step == cut[c] == 0:
                    deltas.append(ChoiceDelta(c, "", 0, reasons[c], lps([])))
            if deltas:
                yield GenerateChunk(prompt, deltas, queue_s=0.0, first_token_s=0.0,
                                    prompt_logprobs=prompt_lps if step == 0 else None)

    async def load(self, adapter: AdapterHandle) -> None:
        if not (adapter.path / CONFIG_FILE).is_file():
            raise InvalidRequest(f"no {CONFIG_FILE} in {adapter.path}", param="lora_path")
        self.loaded.add(adapter.id)

    def _activate(self, lora_id: int) -> None:
        """vLLM's slot LRU: a batch puts its adapters in slots, pushing out the least recent unpinned one."""
        self.slots.pop(lora_id, None)
        if len(self.slots) >= self.max_loras:
            victim = next((i for i in self.slots if i not in self.pinned), None)
            if victim is None:
                raise RuntimeError("every LoRA slot is pinned")
            del self.slots[victim]
        self.slots[lora_id] = None

    async def unload(self, adapter: AdapterHandle) -> None:
        self.loaded.discard(adapter.id)
        self.slots.pop(adapter.id, None)
        self.pinned.discard(adapter.id)

    async def pin(self, adapter: AdapterHandle, pinned: bool = True) -> None:
        if not pinned:
            self.pinned.discard(adapter.id)
            return
        if adapter.id not in self.loaded:
            await self.load(adapter)
        self._activate(adapter.id)
        self.pinned.add(adapter.id)

    async def residency(self) -> dict[int, str]:
        return {i: "device" if i in self.slots else "host" for i in self.loaded}

    async def check_health(self) -> None:
        if not self.healthy:
            raise EngineUnavailable("fake engine is down")

    def shutdown(self) -> None:
        self.healthy = False
