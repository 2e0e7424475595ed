"""Data: the three formats people have become chat messages; every bad row is named at once."""

from __future__ import annotations

import json

import pytest

from loramux.trainer.data import DataError, load_splits, read_jsonl


def _write(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_chat_prompt_completion_and_alpaca_rows_become_the_same_messages(tmp_path):
    f = _write(tmp_path / "mixed.jsonl", [
        {"messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "hello"}]},
        {"prompt": "hi", "completion": "hello"},
        {"instruction": "greet", "input": "Bob", "output": "hello Bob"},
        {"instruction": "greet", "output": "hello"},
    ])
    ex = read_jsonl(f)
    assert [e.answer for e in ex] == ["hello", "hello", "hello Bob", "hello"]
    assert ex[0].prompt[0] == {"role": "system", "content": "be brief"}
    assert ex[1].messages == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert ex[2].prompt == [{"role": "user", "content": "greet\n\nBob"}]
    assert ex[3].prompt == [{"role": "user", "content": "greet"}]


def test_every_bad_row_is_reported_with_file_line_and_field(tmp_path):
    f = _write(tmp_path / "bad.jsonl", [
        {"prompt": "ok", "completion": "fine"},
        "{not json",
        {"prompt": "x", "completion": 3},
        {"question": "?", "answer": "!"},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "robot", "content": "beep"}]},
        {"instruction": "", "output": "x"},
        [1, 2],
    ])
    with pytest.raises(DataError) as e:
        read_jsonl(f)
    problems = e.value.problems
    assert len(problems) >= 6
    text = e.value.message
    for needle in (f"{f}:2: not valid JSON", f"{f}:3: completion: expected a string",
                   f"{f}:4: unknown format", f"{f}:5: messages[1].role", f"{f}:6: instruction: is empty",
                   f"{f}:7: expected a JSON object"):
        assert needle in text, text
    assert f"{f}:1" not in text


def test_a_bad_eval_file_is_reported_with_the_train_file_problems(tmp_path):
    train = _write(tmp_path / "train.jsonl", [{"prompt": "a", "completion": "b"}, "oops"])
    held = _write(tmp_path / "eval.jsonl", [{"prompt": "a"}])
    with pytest.raises(DataError) as e:
        load_splits(train, held)
    assert f"{train}:2" in e.value.message and f"{held}:1" in e.value.message


def test_held_out_split_is_disjoint_deterministic_and_drops_nothing(tmp_path):
    f = _write(tmp_path / "d.jsonl", [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(50)])
    a = load_splits(f, eval_fraction=0.2, seed=3)
    b = load_splits(f, eval_fraction=0.2, seed=3)
    assert [e.answer for e in a.eval] == [e.answer for e in b.eval]
    assert len(a.eval) == 10 and len(a.train) == 40
    assert {e.answer for e in a.train} | {e.answer for e in a.eval} == {f"a{i}" for i in range(50)}
    assert not {e.answer for e in a.train} & {e.answer for e in a.eval}
    assert a.data_hash.startswith("sha256:") and a.data_hash == b.data_hash
    f.write_text(f.read_text() + json.dumps({"prompt": "new", "completion": "row"}) + "\n")
    assert load_splits(f, eval_fraction=0.2, seed=3).data_hash != a.data_hash
