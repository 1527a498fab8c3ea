"""The official `openai` Python SDK against a running sluice, unchanged but for base_url.

Run by tests/api/openai_sdk.rs with SLUICE_BASE_URL, SLUICE_KEY and MOCK_URL set.
Prints one line per check and a closing "N passed, N failed" line; exits non-zero on failure.
"""

import json
import os
import sys
import traceback
import urllib.request

import openai

BASE = os.environ["SLUICE_BASE_URL"].rstrip("/") + "/v1"
KEY = os.environ["SLUICE_KEY"]
MOCK = os.environ["MOCK_URL"].rstrip("/")
MODEL = "mock/mock-model"

client = openai.OpenAI(base_url=BASE, api_key=KEY, max_retries=0, timeout=30)


def push(script):
    """Scripts the mock upstream's next answer."""
    request = urllib.request.Request(
        MOCK + "/__mock/script",
        data=json.dumps(script).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    urllib.request.urlopen(request).read()


def non_streaming_completion():
    push({"chunks": ["Hello", " from", " sluice"]})
    r = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "hi"}], temperature=0.2, seed=1
    )
    assert r.choices[0].message.content == "Hello from sluice", r
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].finish_reason == "stop"
    assert r.usage.completion_tokens == 3 and r.usage.total_tokens > 3, r.usage
    assert r.id.startswith("chatcmpl-")


def streaming_with_usage():
    push({"chunks": ["one ", "two ", "three"]})
    stream = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": [{"type": "text", "text": "count"}]}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three", text
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    finishing = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finishing] == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 3, chunks[-1]


def tool_call_deltas_reassemble():
    push({
        "chunks": [],
        "tool_calls": [
            {"id": "call_weather_1", "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"},
            {"name": "get_time", "arguments": "{\"tz\": \"CET\"}"},
        ],
    })
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
    ]
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "weather?"}], tools=tools, stream=True
    )
    calls = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for d in choice.delta.tool_calls or []:
                entry = calls.setdefault(d.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = entry["id"] or d.id
                if d.function and d.function.name:
                    entry["name"] += d.function.name
                if d.function and d.function.arguments:
                    entry["arguments"] += d.function.arguments
            finish = choice.finish_reason or finish
    assert finish == "tool_calls", finish
    assert calls[0]["id"] == "call_weather_1", calls
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["arguments"]) == {"city": "Paris"}
    assert calls[1]["id"], calls  # generated where the upstream sent none
    assert json.loads(calls[1]["arguments"]) == {"tz": "CET"}


def tool_calls_without_streaming():
    push({"chunks": [], "tool_calls": [{"id": "call_x", "name": "lookup", "arguments": "{\"q\": 1}"}]})
    r = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "look it up"}],
        tools=[{"type": "function", "function": {"name": "lookup"}}],
        tool_choice="auto",
    )
    call = r.choices[0].message.tool_calls[0]
    assert call.id == "call_x" and call.function.name == "lookup"
    assert json.loads(call.function.arguments) == {"q": 1}


def unknown_model_is_not_found_error():
    try:
        client.chat.completions.create(model="nope/nothing", messages=[{"role": "user", "content": "x"}])
    except openai.NotFoundError as e:
        assert e.status_code == 404
        assert e.code == "model_not_found", e.body
        return
    raise AssertionError("no NotFoundError")


def bad_key_is_authentication_error():
    bad = openai.OpenAI(base_url=BASE, api_key="sk_live_" + "x" * 32, max_retries=0)
    try:
        bad.models.list()
    except openai.AuthenticationError:
        return
    raise AssertionError("no AuthenticationError")


def invalid_request_is_bad_request_error():
    try:
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "x"}], temperature=5
        )
    except openai.BadRequestError as e:
        assert e.param == "temperature", e.body
        return
    raise AssertionError("no BadRequestError")


def failing_upstream_is_server_error():
    for _ in range(4):  # sluice retries a 5xx before the first delta
        push({"status": 503})
    try:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    except openai.InternalServerError as e:
        assert e.status_code == 502, e.status_code
        return
    raise AssertionError("no InternalServerError")


def mid_stream_failure_raises_not_truncates():
    push({"chunks": ["partial ", "answer"], "error_after": 1})
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "x"}], stream=True
    )
    seen = ""
    try:
        for chunk in stream:
            if chunk.choices:
                seen += chunk.choices[0].delta.content or ""
    except openai.APIError:
        assert seen == "partial ", seen
        return
    raise AssertionError("the stream ended without an error after " + repr(seen))


def model_list():
    ids = [m.id for m in client.models.list()]
    assert ids[0] == MODEL, ids


CHECKS = [
    non_streaming_completion,
    streaming_with_usage,
    tool_call_deltas_reassemble,
    tool_calls_without_streaming,
    unknown_model_is_not_found_error,
    bad_key_is_authentication_error,
    invalid_request_is_bad_request_error,
    failing_upstream_is_server_error,
    mid_stream_failure_raises_not_truncates,
    model_list,
]

if __name__ == "__main__":
    passed = failed = 0
    for check in CHECKS:
        try:
            check()
            passed += 1
            print(f"ok   {check.__name__}")
        except Exception:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            print(f"FAIL {check.__name__}")
            traceback.print_exc()
    print(f"openai {openai.__version__}: {passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
