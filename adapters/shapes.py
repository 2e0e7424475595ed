"""The shapes of a Llama-family base, from its config.json alone: one vocabulary for the
registry (does an adapter fit this base?) and the trainer (targets, parameter counts, memory)."""

from __future__ import annotations

from dataclasses import dataclass

from loramux.adapters.errors import InvalidRequest

# The linear layers of one decoder layer, and the named sets `target_modules` may use.
ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
LLAMA_LINEARS = ATTENTION + MLP
TARGET_SETS: dict[str, list[str]] = {"attention": list(ATTENTION), "mlp": list(MLP), "all-linear": list(LLAMA_LINEARS)}

_REQUIRED = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


@dataclass(frozen=True)
class BaseShape:
    vocab: int | None  # not needed to check an adapter's shapes; needed to count parameters
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool

    @classmethod
    def from_config(cls, cfg: dict) -> BaseShape:
        if missing := [k for k in _REQUIRED if k not in cfg]:
            raise InvalidRequest(f"base config lacks {', '.join(missing)} (a Llama-family config.json is needed)",
                                 param="base")
        heads = cfg["num_attention_heads"]
        return cls(cfg.get("vocab_size"), cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"],
                   heads, cfg.get("num_key_value_heads") or heads,
                   cfg.get("head_dim") or cfg["hidden_size"] // heads, bool(cfg.get("tie_word_embeddings")))

    def linears(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of every LoRA-targetable linear in one decoder layer."""
        q, kv, h, i = self.heads * self.head_dim, self.kv_heads * self.head_dim, self.hidden, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.linears().values())

    @property
    def embedding_params(self) -> int:
        if self.vocab is None:
            raise InvalidRequest("base config lacks vocab_size (a Llama-family config.json is needed)", param="base")
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def params(self) -> int:
        norms = (2 * self.layers + 1) * self.hidden
        return self.linear_params + self.embedding_params + norms

    def lora_params(self, r: int, targets: list[str]) -> int:
        shapes = self.linears()
        if unknown := sorted(set(targets) - set(shapes)):
            raise InvalidRequest(f"unknown target modules {unknown}; known: {sorted(shapes)}", param="targets")
        return self.layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)
