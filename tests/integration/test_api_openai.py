"""The OpenAI-compatible API (SPEC §3.4) through the official `openai` Python package, unchanged, against
the real pair and model: chat and completions, streamed and whole, usage, several chat turns, errors in
OpenAI's shape."""
import http.client
import json

import openai
import pytest

from harness import ready_worker

TOKEN = "sk-test-openai-0123456789abcdef"
CHAT = [{"role": "system", "content": "You answer in one short sentence."},
        {"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def worker(build_dir, model_path):
    yield from ready_worker(build_dir, model_path, local_mode=False, token=TOKEN, slots=2)


@pytest.fixture(scope="module")
def client(worker):
    c = openai.OpenAI(base_url=f"http://127.0.0.1:{worker.port}/v1", api_key=TOKEN, timeout=60, max_retries=0)
    yield c
    c.close()


def test_chat_streamed_equals_whole_greedy(client):
    whole = client.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=24, temperature=0)
    assert whole.object == "chat.completion" and whole.model == "smollm2"
    assert whole.id.startswith("chatcmpl-")
    choice = whole.choices[0]
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.finish_reason in ("stop", "length")
    assert whole.usage.completion_tokens <= 24 and whole.usage.prompt_tokens > 10
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens

    chunks = list(client.chat.completions.create(model="smollm2", messages=CHAT, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == choice.message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == [choice.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.id == chunks[0].id and c.object == "chat.completion.chunk" for c in chunks)
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3, "streamed in one piece"


def test_completion_streamed_equals_whole_greedy(client):
    whole = client.completions.create(model="m", prompt="Once upon a time", max_tokens=20, temperature=0)
    assert whole.object == "text_completion" and whole.choices[0].finish_reason == "length"
    assert whole.usage.completion_tokens == 20
    stream = client.completions.create(model="m", prompt="Once upon a time", max_tokens=20, temperature=0,
                                       stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == whole.choices[0].text
    assert chunks[-1].choices[0].finish_reason == "length"
    assert all(c.usage is None for c in chunks), "usage only when stream_options.include_usage asks"


def test_completion_default_and_stop(client):
    r = client.completions.create(model="m", prompt="1, 2, 3, 4,", temperature=0)
    assert r.usage.completion_tokens == 16, "OpenAI's default max_tokens for completions"
    r = client.completions.create(model="m", prompt="1, 2, 3, 4,", max_tokens=40, temperature=0, stop=[" 7"])
    assert r.choices[0].finish_reason == "stop" and " 7" not in r.choices[0].text


def test_chat_turns_reach_the_template(client):
    """An earlier assistant turn changes what comes next: all messages are rendered, not only the last."""
    base = [{"role": "user", "content": "Name a colour."}]
    a = client.chat.completions.create(model="m", messages=base, max_tokens=12, temperature=0)
    turns = base + [{"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Another one, please."}]
    b = client.chat.completions.create(model="m", messages=turns, max_tokens=12, temperature=0)
    assert b.usage.prompt_tokens > a.usage.prompt_tokens + 5
    parts = [{"role": "user", "content": [{"type": "text", "text": "Name a"}, {"type": "text", "text": "colour."}]}]
    c = client.chat.completions.create(model="m", messages=parts, max_tokens=12, temperature=0)
    assert c.usage.prompt_tokens == a.usage.prompt_tokens + 1  # the parts are joined by a newline


def test_seed_makes_sampling_repeatable(client):
    kw = dict(model="m", prompt="The weather today", max_tokens=16, temperature=1.0, seed=1234)
    assert client.completions.create(**kw).choices[0].text == client.completions.create(**kw).choices[0].text


def test_models_lists_the_served_model(client, worker):
    models = client.models.list()
    assert len(models.data) == 1 and models.data[0].id == worker.info()["model_id"]


def test_errors_come_in_openai_shape(client, worker):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m", messages=CHAT, n=2)
    body = e.value.body
    assert body["type"] == "invalid_request_error" and body["param"] == "n" and body["code"] == "VALIDATION_FAILED"
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="m", messages=[{"role": "tool", "content": "x"}], temperature=5)
    fields = {x["field"] for x in e.value.body["errors"]}
    assert fields == {"temperature", "messages[0].role"}
    bad = openai.OpenAI(base_url=f"http://127.0.0.1:{worker.port}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as e:
        bad.models.list()
    assert e.value.body["code"] == "INVALID_API_KEY" and e.value.body["type"] == "authentication_error"
    bad.close()
    status, body, _ = worker.request("GET", "/v1/chat/completions")
    assert status == 405 and body["error"]["type"] == "invalid_request_error"


def test_client_disconnect_cancels_the_job(worker):
    conn = http.client.HTTPConnection("127.0.0.1", worker.port, timeout=30)
    body = json.dumps({"model": "m", "prompt": "Once upon a time", "max_tokens": 2000, "stream": True})
    conn.request("POST", "/v1/completions", body=body, headers=worker.headers({"Content-Type": "application/json"}))
    r = conn.getresponse()
    assert r.status == 200 and r.getheader("content-type") == "text/event-stream"
    assert r.readline().startswith(b"data: {")
    conn.sock.close()
    conn.close()
    import harness
    assert harness.wait_until(lambda: worker.info()["jobs"]["running"] == 0, 10), "the job kept running"
