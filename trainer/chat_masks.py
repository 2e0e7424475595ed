"""Assistant-only loss on any chat template: token ids and the mask of the assistant's tokens.

TRL computes this mask only from `{% generation %}` markers, and patches templates it knows
to add them; real bases (SmolLM2, Llama 3.1, Mistral...) ship templates with neither, and
TRL then refuses to train. We tokenize the data ourselves and hand TRL `input_ids` +
`assistant_masks` (TRL 1.x turns the mask into labels and packs them), by the first of:

1. `markers`: the template has `{% generation %}` markers: transformers' assistant mask,
   as the template's author marked it.
2. `prefix`: render the conversation's prefixes. Assistant turn i is the text between
   `render(messages[:i], add_generation_prompt=True)` and `render(messages[:i + 1])`, less
   the whitespace after its end-of-turn token (never generated); each rendering must be a
   string prefix of the next and of the whole conversation.
3. `trl`: where the prefixes do not split a conversation (Phi-3 ends every rendering with
   eos), TRL's patched copy of the template, if it has one and it renders this conversation
   exactly as the original does: the server renders the original.

Masked: every assistant turn's content and its end-of-turn token(s) (`<|im_end|>`,
`<|eot_id|>`, `</s>`), never the header (`<|im_start|>assistant\\n`). The whole text is
tokenized once, with offsets, and a token is masked when its characters overlap an
assistant span: a token merged across the prompt/answer boundary (BPE) is trained, and
the merge is reported once, since the server, tokenizing the prompt alone, splits it there.
A template that is not prefix-preserving (it drops earlier reasoning, moves the system
prompt into the last user turn...) raises one `ChatTemplateError` naming the fix.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass, field

from loramux.adapters.errors import InvalidRequest

MARKERS = re.compile(r"\{%-?\s*generation\s*-?%\}")
PROBE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"},
         {"role": "user", "content": "Bye"}, {"role": "assistant", "content": "See you"}]
"""A two-turn conversation that picks the method and checks the end-of-turn token is trained."""
FIX = ("add `{% generation %}`...`{% endgeneration %}` markers around the assistant's content and "
       "end-of-turn token in the base's chat template (tokenizer_config.json / chat_template.jinja), "
       "train on single-turn prompt-completion data, or set training.completion_only_loss=false")


class ChatTemplateError(InvalidRequest):
    """The base's chat template cannot give assistant-only loss; the message says why and how to fix it."""

    def __init__(self, problem: str, fix: str = FIX) -> None:
        super().__init__(f"the base's chat template cannot mark the assistant's tokens for the loss: {problem}; "
                         f"fix: {fix}", param="base")


def _template(tokenizer) -> str:
    t = tokenizer.chat_template
    if isinstance(t, dict):
        t = t.get("default")
    if not t:
        raise ChatTemplateError("the tokenizer has no chat template")
    return t


def _render(tokenizer, messages: list[dict], *, prompt: bool = False, template: str | None = None) -> str:
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt,
                                             chat_template=template)
    except Exception as e:  # jinja's own errors (raise_exception, undefined...) have no common base
        raise ChatTemplateError(f"rendering {len(messages)} message(s) failed ({type(e).__name__}: {e})",
                                "make the data fit the template (the roles it accepts, in its order)") from None


def _trl_template(tokenizer) -> str | None:
    """TRL's training copy of this template (with markers), or None where TRL has none."""
    from trl.chat_template_utils import get_training_chat_template

    try:
        return get_training_chat_template(tokenizer)
    except (ValueError, TypeError):  # "not training-compatible ... patching is not supported"
        return None


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) characters of each assistant turn, from prefixes."""
    full = _render(tokenizer, messages)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        head = _render(tokenizer, messages[:i], prompt=True)
        turn = _render(tokenizer, messages[:i + 1])
        if not turn.startswith(head):
            raise ChatTemplateError(
                f"messages[{i}] (assistant): the prompt rendered with the generation prompt is not the start of "
                f"the prompt plus this answer (it ends {head[-40:]!r}, the answer's turn reads "
                f"{turn[max(0, len(head) - 40):len(head) + 20]!r}...)")
        if not full.startswith(turn):
            at = next((k for k, (a, b) in enumerate(zip(turn, full)) if a != b), len(turn))
            raise ChatTemplateError(
                f"the template is not prefix-preserving: messages[:{i + 1}] render differently once later "
                f"messages follow ({turn[max(0, at - 30):at + 30]!r} becomes {full[max(0, at - 30):at + 30]!r}); "
                "a template that drops earlier reasoning or moves the system prompt does this")
        start, end = len(head), len(turn.rstrip())
        if end > start:
            spans.append((start, end))
    return full, spans


@dataclass
class Masker:
    """Turns conversations into `{"input_ids", "assistant_masks"}` for one tokenizer (see the module doc)."""

    tokenizer: object
    markers: str | None = None
    """The base's own template, when it has `{% generation %}` markers: used as written."""
    trl: str | None = None
    """TRL's training copy of the template, for conversations the prefixes cannot split (looked up on the
    first such conversation: importing TRL costs ~13 s of CPU)."""
    trl_looked_up: bool = False
    used: Counter = field(default_factory=Counter)
    """Conversations masked by each method (markers, prefix, trl)."""
    merges: int = 0
    """Assistant turns whose first token merged with the prompt's last (reported once)."""

    def __call__(self, messages: list[dict]) -> dict:
        if self.markers is not None:
            return self._count("markers", self._marked(messages, self.markers))
        try:
            return self._count("prefix", self._prefix(messages))
        except ChatTemplateError:
            if not self.trl_looked_up:
                self.trl, self.trl_looked_up = _trl_template(self.tokenizer), True
            if self.trl is None or _render(self.tokenizer, messages, template=self.trl) != _render(
                    self.tokenizer, messages):
                raise  # TRL has no copy, or its copy renders this conversation unlike the served template
            return self._count("trl", _trim(self.tokenizer, self._marked(messages, self.trl)))

    def _count(self, method: str, row: dict) -> dict:
        self.used[method] += 1
        if not any(row["assistant_masks"]):
            raise ChatTemplateError(f"no assistant token is marked in a conversation ({method} method)")
        return row

    def _marked(self, messages: list[dict], template: str) -> dict:
        out = self.tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                 return_assistant_tokens_mask=True, chat_template=template)
        return {"input_ids": list(out["input_ids"]), "assistant_masks": list(out["assistant_masks"])}

    def _prefix(self, messages: list[dict]) -> dict:
        full, spans = assistant_spans(self.tokenizer, messages)
        enc = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
        mask = [int(any(s < e_ and max(e, s + 1) > s_ for s_, e_ in spans)) for s, e in offsets]
        for start, _ in spans:
            head = self.tokenizer(full[:start], add_special_tokens=False)["input_ids"]
            if ids[:len(head)] != head:
                self._merged(full, start)
        return {"input_ids": ids, "assistant_masks": mask}

    def _merged(self, full: str, start: int) -> None:
        self.merges += 1
        if self.merges == 1:
            warnings.warn(f"the chat template's text merges into other tokens across the start of an assistant "
                          f"turn (...{full[max(0, start - 20):start]!r} | {full[start:start + 20]!r}...): training "
                          "sees those tokens; the server, tokenizing the prompt alone, splits them there",
                          stacklevel=3)


def _trim(tokenizer, row: dict) -> dict:
    """Whitespace-only tokens at either edge of a masked run out of the loss: TRL's copies mark the header's
    '\n' (Qwen 2.5: `<|im_start|>assistant{% generation %}\n...`) and the '\n' after the end-of-turn token."""
    mask, ids = list(row["assistant_masks"]), row["input_ids"]
    blank = {i for i in set(ids) if not tokenizer.decode([i]).strip()} - set(tokenizer.all_special_ids)
    for order in (range(len(mask)), range(len(mask) - 1, -1, -1)):
        before = 0
        for k in order:
            if mask[k] and not before and ids[k] in blank:
                mask[k] = 0
                continue
            before = mask[k]
    return {"input_ids": ids, "assistant_masks": mask}


def masker(tokenizer) -> Masker:
    """The masker for this tokenizer's template, checked on a two-turn conversation; ChatTemplateError when
    no method marks it."""
    if not getattr(tokenizer, "is_fast", False):
        raise ChatTemplateError("assistant masks need a fast (Rust) tokenizer, and this base's is a slow one")
    template = _template(tokenizer)
    found = Masker(tokenizer, markers=template if MARKERS.search(template) else None)
    probe = found(PROBE)
    found.used.clear()
    masked = [i for i, m in zip(probe["input_ids"], probe["assistant_masks"], strict=True) if m]
    if masked[-1] not in set(tokenizer.all_special_ids) | set(tokenizer.get_added_vocab().values()):
        warnings.warn(f"the chat template ends an assistant turn with {tokenizer.decode(masked[-1:])!r}, not a "
                      "special end-of-turn token: the adapter may not learn to stop", stacklevel=2)
    return found


def tokenize(tokenizer, conversations: list[list[dict]], *, assistant_only: bool = True) -> list[dict]:
    """Rows for TRL: `input_ids` and, with `assistant_only`, `assistant_masks` (1 = in the loss)."""
    if not assistant_only:
        return [{"input_ids": tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"]}
                for c in conversations]
    mask = masker(tokenizer)
    return [mask(c) for c in conversations]
