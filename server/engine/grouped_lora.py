"""Grouped LoRA ops: one matrix product per adapter present, not one weight copy per token.

vLLM's PyTorch-native ops (the CPU path) expand the adapter index to every token and gather
`weights[indices]` — a full copy of a token's LoRA matrices per token — before an einsum,
56 times a step on the tiny base; a token without an adapter (index -1) gets the last slot.
Here the rows of a step are grouped by adapter slot once (`RowGroups.build`, called from the
punica wrapper's `update_metadata`) and every LoRA call reuses the grouping:

- few groups: per group, a contiguous row range is a view (no copy) and a scattered one an
  `index_select`; then `x @ A.T @ B.T` added into the output slice;
- many groups (decode over many adapters): one padded `bmm` over the groups present, with
  only those adapters' weights gathered — the op count per call stays constant.

Rows with index -1 belong to no group, so base requests in a mixed batch get no delta by
construction. vLLM zero-pads every adapter to the slots' rank cap (`--max-lora-rank`); the
linear ops multiply only up to each slot's real rank (`ranks`), and skip a slot whose adapter
does not target the module at all. Pure torch, no vLLM import: `grouped_punica.py` wires it
into vLLM.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

# Up to this many groups, a loop of plain matmuls beats one padded bmm (fewer ops per group).
LOOP_MAX_GROUPS = 2
# A padded bmm is refused when padding would more than double the rows it multiplies.
PAD_LIMIT = 2.0


@dataclass(frozen=True)
class Group:
    slot: int
    rows: slice | torch.Tensor  # a contiguous range (a view, no copy) or row indices


@dataclass(frozen=True)
class Padded:
    """All groups as one (G, M) block: `gather` picks input rows (padding repeats a real row),
    `valid` picks the real rows of the flattened block (None: no padding), `rows` their targets."""

    slots: torch.Tensor  # (G,)
    slot_list: tuple[int, ...]
    consecutive: bool  # slots form a range: the weights are a view, nothing is gathered
    gather: torch.Tensor  # (G * M,)
    valid: torch.Tensor | None  # (n,) positions in the flattened (G * M) block
    rows: torch.Tensor  # (n,) the output row of each valid position
    width: int  # M


@dataclass(frozen=True)
class RowGroups:
    """The rows of one batch grouped by adapter slot; built once a step, read by every call."""

    groups: tuple[Group, ...]
    padded: Padded | None  # set when one bmm is cheaper than a loop over `groups`

    @property
    def empty(self) -> bool:
        return not self.groups

    @classmethod
    def build(cls, indices: torch.Tensor) -> RowGroups:
        """Group rows by slot; -1 (no adapter) rows are left out."""
        idx = indices.tolist()
        members: dict[int, list[int]] = {}
        for row, slot in enumerate(idx):
            if slot >= 0:
                members.setdefault(slot, []).append(row)
        groups = tuple(Group(slot, _rows(rows, indices.device)) for slot, rows in sorted(members.items()))
        return cls(groups, _padded(members, indices.device) if len(groups) > LOOP_MAX_GROUPS else None)


def _rows(rows: list[int], device) -> slice | torch.Tensor:
    if rows[-1] - rows[0] + 1 == len(rows):
        return slice(rows[0], rows[-1] + 1)
    return torch.tensor(rows, dtype=torch.long, device=device)


def _padded(members: dict[int, list[int]], device) -> Padded | None:
    width = max(len(r) for r in members.values())
    count = sum(len(r) for r in members.values())
    if width * len(members) > PAD_LIMIT * count:
        return None
    slots, gather, valid, rows = [], [], [], []
    for g, (slot, members_rows) in enumerate(sorted(members.items())):
        slots.append(slot)
        gather += members_rows + [members_rows[0]] * (width - len(members_rows))
        valid += range(g * width, g * width + len(members_rows))
        rows += members_rows

    def t(xs):
        return torch.tensor(xs, dtype=torch.long, device=device)

    consecutive = slots == list(range(slots[0], slots[0] + len(slots)))
    return Padded(t(slots), tuple(slots), consecutive, t(gather), None if len(valid) == len(gather) else t(valid),
                  t(rows), width)


def ranks(stacked: torch.Tensor) -> list[int] | None:
    """Each slot's real rank in vLLM's zero-padded A, (slots, 1, cap, in) or (slots, cap, in): rows
    past it are zero. Kept on the tensor and counted again only when its version changes (an
    adapter loaded into a slot); None for an inference tensor, which has no version to check."""
    try:
        version = stacked._version
    except RuntimeError:
        return None
    cached = getattr(stacked, "_loramux_ranks", None)
    if cached is not None and cached[0] == version:
        return cached[1]
    rows = (stacked != 0).any(-1).reshape(stacked.shape[0], -1)  # (slots, cap): which rows are used
    counted = (rows * torch.arange(1, rows.shape[1] + 1, device=rows.device)).amax(-1).tolist()
    stacked._loramux_ranks = (version, counted)
    return counted


def _rank(a: torch.Tensor, slots) -> int:
    """The rank a product over `slots` needs: the largest real rank among them."""
    known = ranks(a)
    return a.shape[-2] if known is None else max(known[s] for s in slots)


def _matrix(stacked: torch.Tensor, slot: int) -> torch.Tensor:
    """One slot's (out, in) matrix from vLLM's (slots, 1, out, in) or (slots, out, in) layout."""
    w = stacked[slot]
    return w[0] if w.dim() == 3 else w


def _matrices(stacked: torch.Tensor, p: Padded) -> torch.Tensor:
    """The groups' (out, in) matrices: a view when their slots are consecutive, else a copy."""
    w = stacked[p.slot_list[0]:p.slot_list[-1] + 1] if p.consecutive else stacked.index_select(0, p.slots)
    return w[:, 0] if w.dim() == 4 else w


def _take(x: torch.Tensor, rows: slice | torch.Tensor) -> torch.Tensor:
    return x[rows] if isinstance(rows, slice) else x.index_select(0, rows)


def _add_rows(y: torch.Tensor, rows: slice | torch.Tensor, delta: torch.Tensor) -> None:
    if isinstance(rows, slice):
        y[rows] += delta
    else:
        y.index_add_(0, rows, delta)


def _put_rows(y: torch.Tensor, rows: slice | torch.Tensor, value: torch.Tensor) -> None:
    if isinstance(rows, slice):
        y[rows] = value
    else:
        y.index_copy_(0, rows, value)


# -- the ops ----------------------------------------------------------------------------


def lora_linear(g: RowGroups, y: torch.Tensor, x: torch.Tensor, lora_a: Sequence[torch.Tensor],
                lora_b: Sequence[torch.Tensor], scale: float, slices: Sequence[int], offset: int = 0) -> None:
    """`y[r, slice i] += scale * x[r] @ A_i[slot(r)].T @ B_i[slot(r)].T` for rows with an adapter.

    Computed in x's dtype, as PEFT does (vLLM's ops go through an fp32 buffer)."""
    if g.empty:
        return
    if g.padded is not None:
        _lora_linear_padded(g.padded, y, x, lora_a, lora_b, scale, slices, offset)
        return
    for grp in g.groups:
        xs = _take(x, grp.rows)
        ys = y[grp.rows] if isinstance(grp.rows, slice) else None
        delta = None if ys is not None else torch.zeros(xs.shape[0], y.shape[1], dtype=y.dtype, device=y.device)
        out, start = (ys if ys is not None else delta), offset
        for a, b, size in zip(lora_a, lora_b, slices):
            if rank := _rank(a, (grp.slot,)):
                h = xs @ _matrix(a, grp.slot)[:rank].to(x.dtype).T
                if scale != 1.0:
                    h = h * scale
                bm = _matrix(b, grp.slot).to(y.dtype)
                out[:, start:start + size].addmm_(h.to(y.dtype), bm[:size, :rank].T)
            start += size
        if delta is not None:
            y.index_add_(0, grp.rows, delta)


def _lora_linear_padded(p: Padded, y, x, lora_a, lora_b, scale, slices, offset) -> None:
    xs = x.index_select(0, p.gather).view(len(p.slots), p.width, x.shape[1])
    start = offset
    for a, b, size in zip(lora_a, lora_b, slices):
        if not (rank := _rank(a, p.slot_list)):
            start += size
            continue
        wa = _matrices(a[..., :rank, :], p)  # (G, rank, in)
        h = torch.bmm(xs, wa.to(x.dtype).transpose(1, 2))
        if scale != 1.0:
            h = h * scale
        wb = _matrices(b[..., :size, :rank], p)  # (G, size, rank)
        out = torch.bmm(h.to(y.dtype), wb.to(y.dtype).transpose(1, 2))
        out = out.view(-1, size)
        if p.valid is not None:
            out = out.index_select(0, p.valid)
        y[:, start:start + size].index_add_(0, p.rows, out)
        start += size


def shrink(g: RowGroups, y: torch.Tensor, x: torch.Tensor, lora_a: torch.Tensor, scale: float) -> None:
    """`y[r, :rank] = scale * x[r] @ A[slot(r)].T`; rows without an adapter are left as they are."""
    for grp in g.groups:
        a = _matrix(lora_a, grp.slot).to(y.dtype)
        h = _take(x, grp.rows).to(y.dtype) @ a.T
        _put_rows(y[:, :a.shape[0]], grp.rows, h * scale if scale != 1.0 else h)


def expand(g: RowGroups, y: torch.Tensor, h: torch.Tensor, lora_b: torch.Tensor, offset: int,
           size: int | None, add: bool = True) -> None:
    """`y[r, offset:offset+size] (+)= h[r] @ B[slot(r)].T`; size None: as wide as both allow
    (vLLM's `common_len`: the adapter and the model may pad a vocabulary differently)."""
    for grp in g.groups:
        b = _matrix(lora_b, grp.slot).to(y.dtype)
        width = min(b.shape[0], y.shape[1] - offset) if size is None else size
        delta = _take(h, grp.rows).to(y.dtype) @ b[:width].T
        target = y[:, offset:offset + width]
        (_add_rows if add else _put_rows)(target, grp.rows, delta)
