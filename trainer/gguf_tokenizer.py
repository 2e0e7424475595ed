"""Does an imported tokenizer cut text into the ids the GGUF model was trained on?

transformers' GGUF conversion writes a plain ByteLevel pre-tokenizer whatever the GGUF's
`tokenizer.ggml.pre` says. For `smollm` (llama.cpp: digits isolated first, then the GPT-2
rules) that differs where a whitespace run meets a digit: "\\n\\n1." is [ĊĊ, 1, .] to the model
and [Ċ, Ċ, 1, .] to plain ByteLevel. So the reference here tokenizes from the GGUF's own
vocabulary, merges and llama.cpp's pre-tokenizer rules (no transformers, no tokenizers), and
`ensure_parity` compares it with the folder's tokenizer on numbers, code, whitespace runs and
non-English text, rewriting `tokenizer.json`'s pre_tokenizer where a known fix exists.
Only byte-level BPE vocabularies (`tokenizer.ggml.model` = gpt2) have a reference here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from loramux.adapters.errors import LoramuxError

# llama.cpp's GPT-2 pre-tokenizer regex; its hand-written matcher (unicode_regex_split_custom_gpt2)
# also takes a trailing whitespace run, as the final `\s+` here does.
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"

# tokenizer.ggml.pre -> llama.cpp's regexes (src/llama-vocab.cpp), applied in turn, each piece kept.
PRE_RULES: dict[str, tuple[str, ...]] = {
    "gpt2": (GPT2,), "mpt": (GPT2,), "olmo": (GPT2,),
    "smollm": (r"\p{N}", GPT2), "starcoder": (r"\p{N}", GPT2), "refact": (r"\p{N}", GPT2),
}

_BYTELEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
# tokenizer.ggml.pre -> the tokenizers pre_tokenizer that implements it (as HF's own tokenizer.json does).
PRE_TOKENIZER_FIX: dict[str, dict] = {
    name: {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\p{N}"}, "behavior": "Isolated", "invert": False}, _BYTELEVEL]}
    for name in ("smollm", "starcoder", "refact")
}

# Texts where pre-tokenizers disagree: digit runs, digits after whitespace runs, code indentation,
# whitespace runs, non-Latin scripts and numerals, special tokens inside text.
PROBES = (
    "12345", "3.14159", "2026-12-07", "Call 555-0199 or +44 20 7946 0958.", "x = 1_000_000 + 0x1F",
    "Total:  42", "a   7 b\t\t8", "text\n\n1. first\n2. second", "  99 bottles", "x² + y³ = z⁴, ½ cup, Ⅻ, ①",
    "def f(x):\n    return x ** 2  # square\n\n\nprint(f(12))", "for (int i = 0; i < 10; ++i) {\n\t\tsum += a[i];\n}",
    "   leading and trailing   ", "tabs\tand\nnew\r\nlines \n\n\n end", "a\u00a0b\u2003c  ",
    "Ça coûte 12,50 € — déjà vu?", "Привет, мир! 2024 год.", "日本語のテキスト、東京タワーは333メートル。",
    "مرحبا بالعالم ١٢٣٤", "Emoji 👍🏽 and 🇫🇷 flags", "don't won't it's I'm you're we've they'll he'd",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
)


class TokenizerMismatch(LoramuxError):
    """The imported tokenizer gives other ids than the model's own and no known fix makes them agree."""

    status_code = 422
    type = "invalid_request_error"
    code = "tokenizer_mismatch"


@dataclass(frozen=True)
class Mismatch:
    text: str
    reference: list[int]
    imported: list[int]


class GGUFVocab:
    """The GGUF's tokenizer metadata and a llama.cpp-style byte-level BPE over it."""

    def __init__(self, fields: dict) -> None:
        self.model = fields.get("tokenizer.ggml.model")
        self.pre = fields.get("tokenizer.ggml.pre") or "default"
        self.tokens: list[str] = fields.get("tokenizer.ggml.tokens") or []
        self.types: list[int] = fields.get("tokenizer.ggml.token_type") or [1] * len(self.tokens)
        self.ranks = {tuple(m.split(" ", 1)): i for i, m in enumerate(fields.get("tokenizer.ggml.merges") or [])}
        add_bos = fields.get("tokenizer.ggml.add_bos_token")  # None: the GGUF does not say; not compared
        self.bos: list[int] | None = None if add_bos is None else (
            [fields["tokenizer.ggml.bos_token_id"]] if add_bos else [])

    @classmethod
    def from_file(cls, path: str | Path) -> GGUFVocab:
        return cls(read_fields(path, prefix="tokenizer.ggml."))

    @property
    def checkable(self) -> bool:
        """Is there a reference for this vocabulary (byte-level BPE with known pre-tokenizer rules)?"""
        return self.model == "gpt2" and self.pre in PRE_RULES

    @cached_property
    def ids(self) -> dict[str, int]:
        return {t: i for i, t in enumerate(self.tokens)}

    @cached_property
    def specials(self):
        """Control and user-defined tokens, matched in text before pre-tokenizing (longest first)."""
        import regex

        names = sorted((t for t, k in zip(self.tokens, self.types) if k in (3, 4) and t), key=len, reverse=True)
        return regex.compile("|".join(regex.escape(n) for n in names)) if names else None

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` as llama.cpp cuts it (special tokens parsed, no BOS added)."""
        ids, pos = [], 0
        for m in self.specials.finditer(text) if self.specials else ():
            ids += self._encode_plain(text[pos:m.start()]) + [self.ids[m.group()]]
            pos = m.end()
        return ids + self._encode_plain(text[pos:])

    def _encode_plain(self, text: str) -> list[int]:
        import regex

        pieces = [text] if text else []
        for rule in PRE_RULES[self.pre]:
            pieces = [p for piece in pieces for p in _split_isolated(regex.compile(rule), piece)]
        table = _byte_to_unicode()
        return [self.ids[s] for p in pieces for s in self._bpe([table[b] for b in p.encode()])]

    def _bpe(self, symbols: list[str]) -> list[str]:
        while len(symbols) > 1:
            ranked = [(self.ranks.get(pair, 1 << 30), i) for i, pair in enumerate(zip(symbols, symbols[1:]))]
            rank, i = min(ranked)
            if rank == 1 << 30:
                break
            symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]  # leftmost lowest-rank pair first, as llama.cpp
        return symbols


def _split_isolated(pattern, text: str) -> list[str]:
    """Matches and the text between them, in order (llama.cpp keeps both as pieces)."""
    out, pos = [], 0
    for m in pattern.finditer(text):
        if m.start() > pos:
            out.append(text[pos:m.start()])
        if m.end() > m.start():
            out.append(m.group())
        pos = m.end()
    return out + ([text[pos:]] if pos < len(text) else [])


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = [b for b in range(256) if b not in keep]
    return {**{b: chr(b) for b in keep}, **{b: chr(256 + i) for i, b in enumerate(extra)}}


def read_fields(source, prefix: str | tuple[str, ...] = "") -> dict:
    """The metadata of a GGUF (path or open GGUFReader) whose keys start with `prefix`: scalars,
    strings and arrays as Python values."""
    from gguf import GGUFReader, GGUFValueType

    reader = source if isinstance(source, GGUFReader) else GGUFReader(str(source))
    out = {}
    for key, field in reader.fields.items():
        if not key.startswith(prefix) or not field.types:
            continue
        kind = field.types[-1]
        if kind == GGUFValueType.STRING:
            values = [bytes(field.parts[i]).decode("utf-8", errors="replace") for i in field.data]
        else:
            values = [field.parts[i].tolist()[0] for i in field.data]
        out[key] = values if field.types[0] == GGUFValueType.ARRAY else values[0]
    return out


def compare(vocab: GGUFVocab, tokenizer_dir: str | Path, texts: tuple[str, ...] = PROBES) -> list[Mismatch]:
    """Texts whose ids differ between the GGUF reference and the folder's tokenizer.json (with the
    BOS the GGUF says to add, or not, when it says)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    specials = vocab.bos is not None
    out = []
    for text in texts:
        want = (vocab.bos or []) + vocab.encode(text)
        got = tok.encode(text, add_special_tokens=specials).ids
        if want != got:
            out.append(Mismatch(text, want, got))
    return out


def ensure_parity(vocab: GGUFVocab, tokenizer_dir: str | Path) -> dict:
    """Check the folder's tokenizer against the GGUF's own rules; fix its pre_tokenizer if needed.

    Returns what was found and done (recorded in the base's provenance); raises
    TokenizerMismatch when ids still differ after the known fix, naming the texts.
    """
    if not vocab.checkable:
        return {"checked": False, "pre_tokenizer": vocab.pre,
                "reason": f"no reference for tokenizer model {vocab.model!r} with pre-tokenizer {vocab.pre!r}"}
    report = {"checked": True, "pre_tokenizer": vocab.pre, "probes": len(PROBES), "fixed": False}
    mismatches = compare(vocab, tokenizer_dir)
    report["mismatches_before_fix"] = len(mismatches)
    if mismatches and vocab.pre in PRE_TOKENIZER_FIX:
        file = Path(tokenizer_dir) / "tokenizer.json"
        doc = json.loads(file.read_text())
        doc["pre_tokenizer"] = PRE_TOKENIZER_FIX[vocab.pre]
        file.write_text(json.dumps(doc, ensure_ascii=False, indent=2))
        report.update(fixed=True, fix=f"tokenizer.json pre_tokenizer set to llama.cpp's {vocab.pre!r} rules "
                                     r"(each \p{N} digit isolated, then ByteLevel)")
        mismatches = compare(vocab, tokenizer_dir)
    if mismatches:
        shown = "; ".join(f"{m.text!r}: model {m.reference} vs imported {m.imported}" for m in mismatches[:3])
        raise TokenizerMismatch(f"the imported tokenizer splits {len(mismatches)} of {len(PROBES)} probe texts "
                                f"unlike the GGUF's own {vocab.pre!r} rules: {shown}")
    return report
