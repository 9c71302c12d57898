"""OpenAIGenerator against faulty servers on 127.0.0.1: a trickling body (request_timeout bounds the whole
request), malformed 200 bodies (BackendError naming URL, status and field) and batches with failing prompts
(the others finish; every failure is reported per prompt)."""

from __future__ import annotations

import json
import pickle
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from loopwright.sdk.errors import BackendError, BatchError, ConfigError
from loopwright.sdk.generators.openai import OpenAIGenerator
from loopwright.sdk.types import SamplingParams

Handler = Callable[[BaseHTTPRequestHandler, int, dict], None]
"""(request handler, request number, JSON body) -> writes the whole answer."""

CHAT = [{"role": "user", "content": "12+7?"}]
FAST = {"backoff": 0.01, "backoff_max": 0.02, "total_timeout": 20}


def send(h: BaseHTTPRequestHandler, status: int, body: bytes | dict, content_type: str = "application/json") -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    h.send_response(status)
    h.send_header("Content-Type", content_type)
    h.send_header("Content-Length", str(len(data)))
    h.end_headers()
    h.wfile.write(data)


def chat_body(content: object = "19") -> dict:
    return {"id": "c", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6}}


def text_body(text: object = "ok") -> dict:
    return {"id": "t", "object": "text_completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


def trickle(h: BaseHTTPRequestHandler, every_s: float = 0.3, max_bytes: int = 40) -> None:
    """A 200 whose body arrives one byte per ``every_s`` (never complete within the test)."""
    h.send_response(200)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", "100000")
    h.end_headers()
    try:
        for _ in range(max_bytes):
            h.wfile.write(b" ")
            h.wfile.flush()
            time.sleep(every_s)
    except OSError:  # the client gave up
        pass


class Server:
    """ThreadingHTTPServer on 127.0.0.1:0 running ``handler`` for every POST; GET /models lists model "m"."""

    def __init__(self, handler: Handler):
        self.posts: list[dict] = []
        lock = threading.Lock()
        server = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - stdlib naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                with lock:
                    server.posts.append(body)
                    i = len(server.posts) - 1
                handler(self, i, body)

            def do_GET(self) -> None:  # noqa: N802
                send(self, 200, {"object": "list", "data": [{"id": "m", "object": "model"}]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Handler], Server]]:
    made: list[Server] = []

    def make(handler: Handler) -> Server:
        made.append(Server(handler))
        return made[-1]

    yield make
    for s in made:
        s.close()


# ---------------------------------------------------------------------------------------------- 10: timeout


def test_request_timeout_bounds_a_trickling_response(serve):
    s = serve(lambda h, i, b: trickle(h))
    g = OpenAIGenerator(s.base_url, "m", request_timeout=1.0, max_retries=1, **FAST)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        g.generate([CHAT], SamplingParams(max_tokens=4))
    elapsed = time.monotonic() - t0
    assert elapsed < 4 * 1.0, f"a 1 s request_timeout held the call {elapsed:.1f}s"
    assert elapsed >= 2 * 1.0 - 0.1, "both attempts must run to the bound"
    assert len(s.posts) == 2, "a timed-out attempt is transient: retried"
    msg = str(err.value)
    assert "request_timeout=1.0" in msg and f"{s.base_url}/chat/completions" in msg, msg


def test_timed_out_attempt_is_retried_and_then_succeeds(serve):
    s = serve(lambda h, i, b: trickle(h) if i == 0 else send(h, 200, text_body("second")))
    g = OpenAIGenerator(s.base_url, "m", request_timeout=0.8, max_retries=2, **FAST)
    t0 = time.monotonic()
    out = g.generate(["p"], SamplingParams(max_tokens=4))
    assert out[0][0].text == "second" and len(s.posts) == 2
    assert time.monotonic() - t0 < 3.0


# ---------------------------------------------------------------------------------------------- 11: bodies


MALFORMED = [
    ("chat", chat_body(None), "choices[0].message.content is null"),
    ("chat", {**chat_body(), "choices": [{"index": 0, "message": {"role": "assistant"}}]},
     "choices[0].message.content is missing"),
    ("text", text_body(5), "choices[0].text: Input should be a valid string (got int 5)"),
    ("text", {k: v for k, v in text_body().items() if k != "choices"}, "choices is missing"),
    ("chat", {**chat_body(), "choices": None}, "choices is null"),
    ("text", {**text_body(), "choices": {"index": 0, "text": "x"}}, "choices: Input should be a valid list"),
    ("text", {**text_body(), "choices": []}, "choices is empty"),
    ("chat", b"<html>oops</html>", "body is not JSON (b'<html>oops</html>')"),
    ("text", b'{"choices": [', "body is not JSON"),
    ("text", [1, 2], "body: Input should be a valid dictionary"),
]


@pytest.mark.parametrize(("kind", "body", "what"), MALFORMED, ids=[m[2][:40] for m in MALFORMED])
def test_malformed_200_body_names_url_status_and_field(serve, kind, body, what):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    s = serve(lambda h, i, b: send(h, 200, raw))
    g = OpenAIGenerator(s.base_url, "m", max_retries=3, **FAST)
    prompt = CHAT if kind == "chat" else "p"
    with pytest.raises(BackendError) as err:
        g.generate([prompt], SamplingParams(max_tokens=4))
    endpoint = "chat/completions" if kind == "chat" else "completions"
    msg = str(err.value)
    assert f"POST {s.base_url}/{endpoint} -> 200: " in msg and what in msg, msg
    assert what in err.value.failures[0] and err.value.partial == [None]
    assert len(s.posts) == 1, "a malformed body is permanent: not retried"


def test_empty_text_is_an_empty_completion(serve):
    s = serve(lambda h, i, b: send(h, 200, chat_body("") if "messages" in b else text_body("")))
    g = OpenAIGenerator(s.base_url, "m", **FAST)
    out = g.generate([CHAT, "p"], SamplingParams(max_tokens=4))
    assert [row[0].text for row in out] == ["", ""]
    assert out[0][0].usage.prompt_tokens == 5 and out[1][0].usage.prompt_tokens == 3


# ---------------------------------------------------------------------------------------------- 12: batches


def fail_some(h: BaseHTTPRequestHandler, i: int, b: dict) -> None:
    """Prompts containing FAIL get a 400 at once; the others succeed after 0.2 s."""
    if "FAIL" in b["prompt"]:
        send(h, 400, {"error": {"message": f"rejected {b['prompt']}", "code": 400}})
    else:
        time.sleep(0.2)
        send(h, 200, text_body(f"done {b['prompt']}"))


BATCH = [f"FAIL-{i}" if i in (1, 4, 8) else f"ok-{i}" for i in range(10)]


def test_collect_finishes_the_others_and_reports_every_failure(serve):
    s = serve(fail_some)
    g = OpenAIGenerator(s.base_url, "m", max_concurrency=4, **FAST)
    assert g.on_error == "collect"
    with pytest.raises(BatchError) as err:
        g.generate(BATCH, SamplingParams(max_tokens=4))
    e = err.value
    assert [i for i, row in enumerate(e.partial) if row is None] == [1, 4, 8]
    assert sorted(e.results) == [0, 2, 3, 5, 6, 7, 9]
    assert all(e.results[i][0].text == f"done ok-{i}" for i in e.results)
    assert sorted(e.failures) == [1, 4, 8]
    for i in (1, 4, 8):
        assert "HTTP 400" in e.failures[i] and f"rejected FAIL-{i}" in e.failures[i], e.failures[i]
    msg = str(e)
    assert "7/10 prompts completed, 3 failed" in msg and all(f"FAIL-{i}" in msg for i in (1, 4, 8)), msg
    assert len(s.posts) == 10


def test_raise_cancels_the_pending_prompts(serve):
    s = serve(fail_some)
    g = OpenAIGenerator(s.base_url, "m", max_concurrency=4, on_error="raise", **FAST)
    with pytest.raises(BatchError) as err:
        g.generate(BATCH, SamplingParams(max_tokens=4))
    e = err.value
    assert len(e.results) < 7 and len(e.failures) == 10 - len(e.results)
    first_fail = next(i for i, m in e.failures.items() if "HTTP 400" in m)
    cancelled = [m for m in e.failures.values() if m.startswith("cancelled")]
    assert cancelled and all(m == f"cancelled after prompt {first_fail} failed" for m in cancelled)


def test_collect_still_stops_when_the_model_is_not_served(serve):
    """A 404 (no such model) would fail every prompt: the batch stops at once, each prompt says why."""
    s = serve(lambda h, i, b: (time.sleep(0.05), send(h, 404, {"error": {"message": "no model x"}})))
    g = OpenAIGenerator(s.base_url, "x", max_concurrency=2, **FAST)
    with pytest.raises(BatchError) as err:
        g.generate([f"p{i}" for i in range(30)], SamplingParams(max_tokens=4))
    e = err.value
    assert len(s.posts) <= 4 and sorted(e.failures) == list(range(30)) and not e.results
    assert "'x' not found" in str(e) and "['m']" in str(e)
    assert sum(m.startswith("cancelled after prompt") for m in e.failures.values()) >= 26


def test_batch_error_pickles_and_on_error_is_checked():
    e = BatchError("boom", partial=[None, []], failures={0: "HTTP 400"})
    back = pickle.loads(pickle.dumps(e))
    assert str(back) == "boom" and back.failures == {0: "HTTP 400"} and back.results == {1: []}
    assert isinstance(back, BackendError)
    with pytest.raises(ConfigError, match="on_error"):
        OpenAIGenerator("http://127.0.0.1:1/v1", "m", on_error="ignore")  # type: ignore[arg-type]
