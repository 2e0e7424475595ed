"""Every sampling field loramux accepts changes what the real engine does, and one it does not
take is a 400 naming it, never silently dropped. Effects are forced to be unambiguous
(a +100 logit bias all but decides a token), so no assertion rests on a near-tie."""

from __future__ import annotations

import pytest
from openai import BadRequestError, OpenAI

pytestmark = pytest.mark.integration

# prompts to find one whose greedy answer from the tiny base says some word twice
CANDIDATES = ("the robot opens the red box", "the cat sees", "the robot", "my friend builds a small boat",
              "Q: Where is my order? A:")


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tok(server):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(server.base_dir)


def _complete(client: OpenAI, prompt: str = "the cat sees", **extra):
    kwargs = {k: extra.pop(k) for k in ("max_tokens", "temperature", "seed", "logit_bias", "user") if k in extra}
    return client.completions.create(model="tiny", prompt=prompt, **({"max_tokens": 6, "temperature": 0} | kwargs),
                                     extra_body=extra or None).choices[0]


def test_logit_bias_forces_and_bans_tokens(client, tok):
    forced = tok.encode(" cat", add_special_tokens=False)[0]
    out = _complete(client, logit_bias={str(forced): 100})
    assert out.text == tok.decode([forced] * 6)
    greedy = _complete(client, max_tokens=1).text
    first = tok.encode(greedy, add_special_tokens=False)[0]
    assert _complete(client, max_tokens=1, logit_bias={str(first): -100}).text != greedy


def test_stop_token_ids_min_tokens_and_ignore_eos(client, tok):
    forced = tok.encode(" cat", add_special_tokens=False)[0]
    stopped = client.completions.create(model="tiny", prompt="the cat sees", max_tokens=6, temperature=0,
                                        logit_bias={str(forced): 100}, extra_body={"stop_token_ids": [forced]})
    assert stopped.usage.completion_tokens == 1 and stopped.choices[0].finish_reason == "stop"
    eos = {str(tok.eos_token_id): 100}  # end of sequence at once, unless told otherwise
    assert client.completions.create(model="tiny", prompt="the cat sees", max_tokens=6, temperature=0,
                                     logit_bias=eos).usage.completion_tokens <= 1
    at_least = client.completions.create(model="tiny", prompt="the cat sees", max_tokens=6, temperature=0,
                                         logit_bias=eos, extra_body={"min_tokens": 4})
    assert at_least.usage.completion_tokens >= 4
    past_eos = client.completions.create(model="tiny", prompt="the cat sees", max_tokens=6, temperature=0,
                                         logit_bias=eos, extra_body={"ignore_eos": True})
    assert past_eos.usage.completion_tokens == 6 and past_eos.choices[0].finish_reason == "length"


def test_repetition_penalty_top_k_and_min_p(client):
    answers = {p: _complete(client, p, max_tokens=12).text for p in CANDIDATES}
    repeats = [p for p, text in answers.items() if len(set(text.split())) < len(text.split())]
    assert repeats, answers  # the premise: on some prompt the base says a word twice
    prompt, plain = repeats[0], answers[repeats[0]]
    # the largest penalty halves a said token's logit: the repeat does not come again
    assert _complete(client, prompt, max_tokens=12, repetition_penalty=2.0).text != plain
    # one candidate left: sampling at temperature 1 gives the greedy answer, whatever the seed
    for seed in (1, 2):
        assert _complete(client, prompt, max_tokens=12, temperature=1.0, seed=seed, top_k=1).text == plain
        assert _complete(client, prompt, max_tokens=12, temperature=1.0, seed=seed, min_p=1.0).text == plain


@pytest.mark.parametrize("extra,param", [
    ({"best_of": 2, "n": 3}, "best_of"),  # fewer than n
    ({"guided_json": {"type": "object"}}, "guided_json"),
    ({"typo_temprature": 0.5}, "typo_temprature"),
    ({"min_tokens": 9}, "min_tokens"),  # more than max_tokens
    ({"logit_bias": {"x": 1}}, "logit_bias"),
])
def test_what_loramux_does_not_take_is_a_400_naming_it(client, extra, param):
    with pytest.raises(BadRequestError) as err:
        client.completions.create(model="tiny", prompt="the cat sees", max_tokens=6, extra_body=extra)
    assert err.value.body["param"].split(".")[0] == param, err.value.body  # nested: logit_bias.x.[key]


def test_best_of_returns_the_answers_likeliest_per_token(client):
    """best_of=4, n=2 gives the two of the same four samples (same seed) with the highest mean logprob."""
    kw = dict(model="acme/support", prompt="the cat sees", max_tokens=6, temperature=1.0, seed=11)
    four = client.completions.create(n=4, logprobs=0, **kw).choices
    assert len({c.text for c in four}) > 1  # the premise: the samples differ
    mean = {c.text: sum(c.logprobs.token_logprobs) / len(c.logprobs.token_logprobs) for c in four}
    best = client.completions.create(n=2, extra_body={"best_of": 4}, **kw)
    assert [c.text for c in best.choices] == sorted(mean, key=mean.get, reverse=True)[:2]
    assert [c.index for c in best.choices] == [0, 1] and best.choices[0].logprobs is None
    assert best.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in four)  # all four were generated
