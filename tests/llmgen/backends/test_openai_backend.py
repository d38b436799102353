"""The OpenAI-compatible server backend: retries and spreading against small stdlib HTTP servers,
and parity with the in-process vLLM engine against a real ``vllm serve`` of the embedded model."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmgen.backends import SamplingConfig, get_backend
from llmgen.backends.openai import ServerPool, backoff_delay, parse_base_urls
from llmgen.errors import LlmgenError

ECHO_TOKENS = [72, 105, 33]  # what the scripted server echoes, scored as context [72] + continuation [105, 33]


def _choice_body(prompt: list[int]) -> dict:
    """A vLLM-shaped ``/completions`` answer: the prompt echoed with logprobs, one generated token."""
    ids = [*prompt, 10]
    lps = [None] + [-0.5 * i for i in range(1, len(ids))]
    tops = [None] + [{f"token_id:{t}": lp, "token_id:0": -0.75} for t, lp in zip(ids[1:], lps[1:], strict=True)]
    return {"choices": [{"index": 0, "text": "\n", "finish_reason": "length",
                         "logprobs": {"tokens": [f"token_id:{t}" for t in ids], "token_logprobs": lps,
                                      "top_logprobs": tops}}]}


class Scripted(BaseHTTPRequestHandler):
    """Answers ``/v1/models`` and ``/v1/completions``; the first ``fail`` completions get ``status``."""

    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def _send(self, code: int, body: dict, headers: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, {"data": [{"id": "scripted", "max_model_len": 64}]})

    def do_POST(self) -> None:
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.bodies.append(body)
            fail = len(srv.bodies) <= srv.fail
        if fail:
            self._send(srv.status, {"error": "busy"}, {"Retry-After": "0"} if srv.status == 429 else None)
        elif body.get("model") != "scripted":
            self._send(404, {"error": f"model {body.get('model')} does not exist"})
        else:
            self._send(200, _choice_body(body["prompt"]))


@pytest.fixture
def scripted():
    """Start stdlib servers on free ports: ``scripted(fail=2, status=429)`` → (url, server)."""
    servers = []

    def start(fail: int = 0, status: int = 429):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
        srv.fail, srv.status, srv.bodies, srv.lock = fail, status, [], threading.Lock()
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/v1", srv

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def test_429_then_200_is_retried_with_backoff(scripted):
    url, srv = scripted(fail=2, status=429)
    url2, srv2 = scripted(fail=1, status=503)
    sleeps: list[float] = []
    pool = ServerPool([url], backoff=0.25, sleep=sleeps.append)
    out = pool.request("/completions", {"model": "scripted", "prompt": ECHO_TOKENS})
    assert out["choices"][0]["logprobs"]["tokens"][0] == "token_id:72"
    assert len(srv.bodies) == 3 and pool.retries == 2
    assert sleeps == [0.0, 0.0]  # Retry-After: 0 wins over the exponential schedule
    pool2 = ServerPool([url2], backoff=0.25, sleep=sleeps.append)
    pool2.request("/completions", {"model": "scripted", "prompt": ECHO_TOKENS})
    assert len(srv2.bodies) == 2 and sleeps[-1] == 0.25  # 503 without Retry-After: backoff * 2**0
    assert [backoff_delay(a, 0.5, 30, None) for a in range(7)] == [0.5, 1, 2, 4, 8, 16, 30]


def test_gives_up_with_one_line_and_never_retries_client_errors(scripted):
    url, srv = scripted(fail=10, status=500)
    pool = ServerPool([url], max_retries=3, backoff=0.0, sleep=lambda s: None)
    with pytest.raises(LlmgenError, match=r"failed after 4 attempts.*500") as e:
        pool.request("/completions", {"model": "scripted", "prompt": [1]})
    assert "\n" not in str(e.value) and len(srv.bodies) == 4
    url2, srv2 = scripted()
    pool2 = ServerPool([url2], backoff=0.0, sleep=lambda s: None)
    with pytest.raises(LlmgenError, match=r"answered 404.*nope does not exist"):
        pool2.request("/completions", {"model": "nope", "prompt": [1]})
    assert len(srv2.bodies) == 1 and pool2.retries == 0


def test_requests_spread_over_urls_and_fail_over_a_dead_one(scripted, tiny_model_dir):
    (a, sa), (b, sb) = scripted(), scripted()
    backend = get_backend("openai", tiny_model_dir, base_url=f"{a},{b}", concurrency=4)
    res = backend.loglikelihood_tokens([([72], [105, 33])] * 10)
    assert backend.max_length == 64  # the max_model_len the server lists
    assert len(sa.bodies) == 5 and len(sb.bodies) == 5
    assert all(body["echo"] and body["logprobs"] == 1 and body["prompt"] == ECHO_TOKENS for body in sa.bodies)
    # echoed logprobs at positions 1 and 2 are -0.5 and -1.0; the alternative (-0.75) beats -1.0
    assert res[0].token_logprobs == [-0.5, -1.0] and res[0].logprob == -1.5 and res[0].is_greedy is False

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    pool = ServerPool([dead, a], backoff=0.0, sleep=lambda s: None)
    for _ in range(4):
        pool.request("/completions", {"model": "scripted", "prompt": [1, 2]})
    assert pool.requests_per_url == {dead: 0, a: 4} and pool.retries == 2  # every 2nd first try hit the dead one


def test_bad_base_urls_fail_before_any_request(tiny_model_dir):
    assert parse_base_urls("http://a:1, http://b:2/v1/") == ["http://a:1/v1", "http://b:2/v1"]
    for bad, message in [(None, "needs --base-url"), ("a:1", "must start with http"), (" , ", "is empty")]:
        with pytest.raises(LlmgenError, match=message):
            get_backend("openai", tiny_model_dir, base_url=bad)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    t = time.time()
    with pytest.raises(LlmgenError, match=r"/models failed after 3 attempts"):  # not the full 7-attempt schedule
        get_backend("openai", tiny_model_dir, base_url=dead, backoff=0.1)
    assert time.time() - t < 10


def test_cli_base_url(tmp_path, scripted, tiny_model_dir):
    """`llmgen eval --backend openai --base-url A,B` reaches both servers; --base-url alone is refused."""
    (a, sa), (b, sb) = scripted(), scripted()
    run = subprocess.run([sys.executable, "-m", "llmgen.cli.main", "eval", "--backend", "openai", "--base-url",
                          f"{a},{b}", "--model", tiny_model_dir, "--tasks", "sentiment", "--limit", "3",
                          "--no-cache", "--output-dir", str(tmp_path / "run")],
                         capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["backend"]["backend"] == "openai" and res["backend"]["base_urls"] == [a, b]
    assert res["backend"]["served_model"] == "scripted" and len(sa.bodies) + len(sb.bodies) == res["cache"]["misses"]
    assert len(sa.bodies) > 0 and len(sb.bodies) > 0
    bad = subprocess.run([sys.executable, "-m", "llmgen.cli.main", "eval", "--base-url", "http://x:1"],
                         capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip().splitlines()[-1] == (
        "error: --base-url needs a server backend (openai, openai-chat, openai-completions), not hf")


# --- a real `vllm serve` ------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(default_model_dir, tmp_path_factory):
    """``vllm serve`` of the embedded model on 127.0.0.1, with the engine settings VLLMBackend uses on CPU.

    One process fewer than vLLM's default: the model runs in the engine-core process (``uni``
    executor; on CPU vLLM allows it only with ``VLLM_ENABLE_V1_MULTIPROCESSING=0``, which the API
    server's always-separate engine core ignores otherwise), so the server starts two interpreters, not
    three. Where the model runs does not change what it computes; the tests below check exactly that
    against the in-process engine."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "server.log"
    env = dict(os.environ, VLLM_CPU_KVCACHE_SPACE=os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1"),
               VLLM_LOGGING_LEVEL="WARNING", VLLM_ENABLE_V1_MULTIPROCESSING="0")
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", default_model_dir,
           "--host", "127.0.0.1", "--port", str(port), "--dtype", "float32", "--max-model-len", "2048",
           "--seed", "0", "--enforce-eager", "--no-enable-chunked-prefill", "--no-enable-prefix-caching",
           "--distributed-executor-backend", "uni", "--disable-log-stats", "--uvicorn-log-level", "warning"]
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 600
    while True:
        try:
            urllib.request.urlopen(url + "/models", timeout=5).read()
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail("vllm serve did not start:\n" + Path(log).read_text()[-3000:])
            time.sleep(2)
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.mark.vllm
def test_server_matches_the_vllm_engine_on_tasks(vllm_server, vllm_default, default_model_dir):
    """Same tasks through `vllm serve` and the in-process engine: same greedy text, same scores."""
    from llmgen.evaluate import EvalConfig, run_eval

    runs = {}
    for name, backend in [("vllm", vllm_default),
                          ("openai", get_backend("openai", default_model_dir, base_url=vllm_server))]:
        config = EvalConfig(model=default_model_dir, backend=name, tasks=["arithmetic", "sentiment"], limit=12,
                            cache=None)
        runs[name] = run_eval(config, backend=backend, show_progress=False)
    served, local = runs["openai"], runs["vllm"]
    assert served["results"] == local["results"]
    for s, v in zip(served["samples"], local["samples"], strict=True):
        assert s["responses"] == v["responses"]
        if "choice_logprobs" in v:
            assert s["choice_logprobs"] == pytest.approx(v["choice_logprobs"], abs=1e-3)
    assert served["backend"]["base_urls"] == [vllm_server]


@pytest.mark.vllm
def test_server_scores_and_samples_like_the_engine(vllm_server, vllm_default, default_model_dir):
    """Backend level: per-token logprobs, is_greedy, and seeded sampling with n > 1."""
    served = get_backend("openai", default_model_dir, base_url=vllm_server, concurrency=4)
    pairs = [("The capital of France is", " Paris"), ("2 + 2 =", " 5"), ("", "Hello world"),
             ("Question: is the sky blue?\nAnswer:", " yes")]
    for a, b in zip(served.loglikelihood(pairs), vllm_default.loglikelihood(pairs), strict=True):
        assert a.num_tokens == b.num_tokens and a.is_greedy == b.is_greedy
        assert a.token_logprobs == pytest.approx(b.token_logprobs, abs=1e-3)
    sampling = SamplingConfig(n=3, temperature=0.8, max_tokens=6, seed=1)
    prompts = ["Once upon a time", "The best thing about"]
    for a, b in zip(served.generate(prompts, sampling), vllm_default.generate(prompts, sampling), strict=True):
        assert [c.token_ids for c in a] == [c.token_ids for c in b]
        assert [c.text for c in a] == [c.text for c in b]


def _rows(run: Path) -> dict[int, dict]:
    return {r["doc_id"]: r for r in map(json.loads, (run / "samples.jsonl").read_text().splitlines())}


@pytest.mark.vllm
def test_chat_endpoint_answers_as_the_engine_with_the_chat_template(vllm_server, vllm_default, default_model_dir,
                                                                    tmp_path):
    """`llmgen eval --backend openai-chat` on `vllm serve` gives the greedy answers of `--backend vllm
    --apply-chat-template` (the server applies the model's chat template to the task's messages), and
    `--formats 3` runs through it."""
    from llmgen.evaluate import EvalConfig, run_eval

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "llmgen.cli.main", "eval", "--backend", "openai-chat",
                               "--base-url", vllm_server, "--tasks", "arithmetic", "--limit", "8", "--no-cache", *args],
                              capture_output=True, text=True, cwd=tmp_path, timeout=600)

    chat = cli("--output-dir", str(tmp_path / "chat"))
    assert chat.returncode == 0, chat.stderr[-3000:]
    local = run_eval(EvalConfig(model=default_model_dir, backend="vllm", tasks=["arithmetic"], limit=8, cache=None,
                                apply_chat_template=True), backend=vllm_default, show_progress=False)
    served = _rows(tmp_path / "chat")
    assert {r["doc_id"]: r["responses"] for r in local["samples"]} == {i: r["responses"] for i, r in served.items()}
    res = json.loads((tmp_path / "chat" / "results.json").read_text())
    assert res["results"] == local["results"] and res["backend"]["requests"] == 8
    assert res["backend"]["served_model"] == default_model_dir and res["backend"]["completion_tokens"] > 0

    formats = cli("--formats", "3", "--output-dir", str(tmp_path / "formats"))
    assert formats.returncode == 0, formats.stderr[-3000:]
    spread = json.loads((tmp_path / "formats" / "results.json").read_text())
    assert spread["backend"]["backend"] == "openai-chat" and spread["backend"]["requests"] >= 8


@pytest.mark.vllm
def test_text_completions_endpoint_generates_as_the_engine(vllm_server, vllm_default):
    """`openai-completions` sends text (the server tokenises it): greedy text as the engine's."""
    served = get_backend("openai-completions", "default", base_url=vllm_server, concurrency=4)
    prompts = ["The capital of France is", "Question: what is 2 + 3?\nAnswer:", "Once upon a time"]
    sampling = SamplingConfig(max_tokens=12, stop=("\n",))
    assert ([c[0].text for c in served.generate(prompts, sampling)]
            == [c[0].text for c in vllm_default.generate(prompts, sampling)])
    assert served.describe()["requests"] == 3 and served.describe()["tokenization"] == "server"
