"""Tenant data in the formats people already have, normalised to chat messages.

Chat `{"messages": [...]}`, `{"prompt", "completion"}` and alpaca
`{"instruction", "input", "output"}` rows all become `{"messages": [...]}` so one chat
template and one loss mask (assistant tokens) apply. Every bad row is reported (file,
line, field) in one DataError: nothing trains on a silently dropped part of the data.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loramux.adapters.errors import InvalidRequest

ROLES = {"system", "user", "assistant"}
MAX_LISTED = 50


class DataError(InvalidRequest):
    """The data has problems; `problems` lists each as 'file:line: field: what'."""

    def __init__(self, problems: list[str]) -> None:
        n = len(problems)
        shown = problems[:MAX_LISTED] + ([f"... and {n - MAX_LISTED} more"] if n > MAX_LISTED else [])
        super().__init__(f"{n} data problem{'s' * (n != 1)}:\n" + "\n".join(f"- {p}" for p in shown), param="data")
        self.problems = problems


def _text(row: dict, field: str, problems: list[str], *, required: bool = True) -> str:
    value = row.get(field)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        problems.append(f"{field}: expected a string, got {type(value).__name__}")
        return ""
    if required and not value.strip():
        problems.append(f"{field}: is empty")
    return value


def _chat(row: dict, problems: list[str]) -> list[dict]:
    messages = row["messages"]
    if not isinstance(messages, list) or not messages:
        problems.append("messages: expected a non-empty list of {role, content}")
        return []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            problems.append(f"messages[{i}]: expected an object with role and content")
            continue
        if m.get("role") not in ROLES:
            problems.append(f"messages[{i}].role: {m.get('role')!r} is not one of {sorted(ROLES)}")
        if not isinstance(m.get("content"), str):
            problems.append(f"messages[{i}].content: expected a string")
    if isinstance(messages[-1], dict) and messages[-1].get("role") != "assistant":
        problems.append(f"messages[{len(messages) - 1}].role: the last message must be the assistant's answer")
    return [{"role": m.get("role"), "content": m.get("content")} for m in messages if isinstance(m, dict)]


def _prompt_completion(row: dict, problems: list[str]) -> list[dict]:
    """The prompt as the user's turn, the completion as the assistant's, in the base's chat template (loss on
    the completion and its end-of-turn token only). Not raw text: on a chat base the server renders chat
    requests with the template, and the gate (evaluate.render_prompt) scores the adapter exactly as served;
    raw text would teach a format that no chat request sends (README: which endpoint for which data)."""
    prompt = _text(row, "prompt", problems)
    completion = _text(row, "completion", problems)
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]


def _alpaca(row: dict, problems: list[str]) -> list[dict]:
    instruction = _text(row, "instruction", problems)
    extra = _text(row, "input", problems, required=False)
    output = _text(row, "output", problems)
    prompt = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


# Format name -> (fields that identify it, converter). Checked in order.
FORMATS: dict[str, tuple[tuple[str, ...], Callable[[dict, list[str]], list[dict]]]] = {
    "chat": (("messages",), _chat),
    "prompt_completion": (("prompt", "completion"), _prompt_completion),
    "alpaca": (("instruction", "output"), _alpaca),
}


def detect_format(row: dict) -> str | None:
    for name, (fields, _) in FORMATS.items():
        if all(f in row for f in fields):
            return name
    return None


@dataclass
class Example:
    """One conversation; the last message is the answer the model must produce."""

    messages: list[dict]

    @property
    def prompt(self) -> list[dict]:
        return self.messages[:-1]

    @property
    def answer(self) -> str:
        return self.messages[-1]["content"]


def read_jsonl(path: str | Path, problems: list[str] | None = None) -> list[Example]:
    """Parse one JSONL file; problems are appended (raised by the caller) or raised here."""
    own = problems is None
    problems = [] if own else problems
    path = Path(path)
    examples = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        problems.append(f"{path}: cannot read: {e}")
        lines = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except ValueError as e:
            problems.append(f"{where}: not valid JSON ({e.msg})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{where}: expected a JSON object, got {type(row).__name__}")
            continue
        fmt = detect_format(row)
        if fmt is None:
            problems.append(f"{where}: unknown format (fields {sorted(row)}); expected one of "
                            + "; ".join(" + ".join(f) for f, _ in FORMATS.values()))
            continue
        row_problems: list[str] = []
        messages = FORMATS[fmt][1](row, row_problems)
        problems.extend(f"{where}: {p}" for p in row_problems)
        if not row_problems:
            examples.append(Example(messages))
    if not examples and not problems:
        problems.append(f"{path}: no examples")
    if own and problems:
        raise DataError(problems)
    return examples


@dataclass
class Splits:
    train: list[Example]
    eval: list[Example]
    data_hash: str


def file_hash(paths: list[Path]) -> str:
    """sha256 over the data files' bytes (recorded in the manifest)."""
    h = hashlib.sha256()
    for p in paths:
        h.update(p.name.encode() + b"\0" + Path(p).read_bytes() + b"\0")
    return "sha256:" + h.hexdigest()


def load_splits(train: Path | None, eval: Path | None = None, *, eval_fraction: float = 0.1,
                seed: int = 0) -> Splits:
    """Train and held-out examples; the split (when there is no eval file) is fixed by `seed`."""
    problems: list[str] = []
    if train is None:
        raise DataError(["data.train: no training file given"])
    train_rows = read_jsonl(train, problems)
    eval_rows = read_jsonl(eval, problems) if eval is not None else []
    if problems:
        raise DataError(problems)
    if eval is None:
        order = list(range(len(train_rows)))
        random.Random(seed).shuffle(order)
        n_eval = max(1, round(len(order) * eval_fraction))
        if len(order) - n_eval < 1:
            raise DataError([f"{train}: {len(order)} example(s) cannot be split into train and eval; "
                             "add data or pass an eval file"])
        held = set(order[:n_eval])
        eval_rows = [train_rows[i] for i in sorted(held)]
        train_rows = [r for i, r in enumerate(train_rows) if i not in held]
    files = [p for p in (train, eval) if p is not None]
    return Splits(train=train_rows, eval=eval_rows, data_hash=file_hash(files))


def write_jsonl(path: str | Path, rows: list[dict]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path
