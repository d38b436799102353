"""API-model backends (openai-chat, openai-completions) against stdlib servers: what is sent, what is
counted, keys that never reach the disk, answers checked before they are cached, hung servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmgen.backends import SamplingConfig, get_backend
from llmgen.errors import LlmgenError
from llmgen.tasks import get_task

LLMGEN = [sys.executable, "-m", "llmgen.cli.main"]
SECRET = "sk-test-7f3a9c1e55d04b2b"


class Api(BaseHTTPRequestHandler):
    """``/v1/models`` and both endpoints, OpenAI-shaped; ``server.mode`` picks a misbehaviour:
    ``ok``, ``html`` (a 200 HTML page), ``shape`` (JSON without choices), ``hang`` (never answers)."""

    def log_message(self, *args) -> None:
        pass

    def _send(self, code: int, data: bytes, kind: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._send(200, json.dumps({"object": "list", "data": [
            {"id": self.server.model_id, "object": "model", "created": int(time.time()), "max_model_len": 2048}]}).encode())

    def do_POST(self) -> None:
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with srv.lock:
            srv.bodies.append((self.path, body, self.headers.get("Authorization")))
        if srv.mode == "hang":
            srv.release.wait(60)
            return
        if srv.mode == "html":
            return self._send(200, b"<html><body>Welcome to nginx!</body></html>", "text/html")
        if srv.mode == "shape":
            return self._send(200, json.dumps({"result": "ok"}).encode())
        if self.path.endswith("/chat/completions"):
            answer = " The answer is 4."
            choices = [{"index": j, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
                       for j in range(body["n"])]
        else:
            answer = " 4\nQuestion: more"  # the stop string "\n" is cut here when the server ignores it
            choices = [{"index": j, "text": answer, "finish_reason": "length"} for j in range(body["n"])]
        usage = {"prompt_tokens": 10, "completion_tokens": 3 * body["n"], "total_tokens": 10 + 3 * body["n"]}
        self._send(200, json.dumps({"id": "x", "choices": choices, "usage": usage}).encode())


@pytest.fixture
def api():
    """``api(mode="ok", model_id="served-a")`` → (base URL, server); servers stop at teardown."""
    servers = []

    def start(mode: str = "ok", model_id: str = "served-a"):
        srv = ThreadingHTTPServer(("127.0.0.1", 0), Api)
        srv.mode, srv.model_id, srv.bodies, srv.lock, srv.release = mode, model_id, [], threading.Lock(), threading.Event()
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}/v1", srv

    yield start
    for srv in servers:
        srv.release.set()
        srv.shutdown()
        srv.server_close()


def llmgen(tmp_path: Path, *args: str, env: dict | None = None, timeout: int = 300):
    full_env = {k: v for k, v in os.environ.items() if k != "OPENAI_API_KEY"}
    full_env.update({"LLMGEN_CACHE": str(tmp_path / "cache"), **(env or {})})
    return subprocess.run([*LLMGEN, *args], capture_output=True, text=True, cwd=tmp_path, env=full_env,
                          timeout=timeout)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def files_holding(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_chat_sends_the_tasks_messages_and_counts_the_run(tmp_path, api):
    """Messages are the task's own chat prompt; n, seed, stop go along; the key goes only in the
    Authorization header; results.json counts requests, tokens and says the server tokenises."""
    url, srv = api()
    r = llmgen(tmp_path, "eval", "--backend", "openai-chat", "--base-url", url, "--tasks", "arithmetic",
               "--limit", "3", "--num-samples", "2", "--temperature", "0.7", "--output-dir", "run",
               env={"OPENAI_API_KEY": SECRET})
    assert r.returncode == 0, r.stderr[-3000:]
    task = get_task("arithmetic")
    docs = task.limit_docs(3)
    sent = [b for _, b, _ in srv.bodies]  # concurrent requests: any order
    assert sorted(json.dumps(b["messages"]) for b in sent) == sorted(
        json.dumps(task.build_messages(d, None, None, i)) for i, d in enumerate(docs))
    assert all(b["n"] == 2 and b["model"] == "served-a" and b["temperature"] == 0.7 and isinstance(b["seed"], int)
               and b["stop"] == list(task.stop) for b in sent)
    assert len({b["seed"] for b in sent}) == 3  # one seed per prompt
    assert {path for path, _, _ in srv.bodies} == {"/v1/chat/completions"}
    assert {auth for _, _, auth in srv.bodies} == {f"Bearer {SECRET}"}
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    b = res["backend"]
    assert (b["backend"], b["served_model"], b["base_urls"], b["tokenization"]) == ("openai-chat", "served-a", [url], "server")
    assert (b["requests"], b["prompt_tokens"], b["completion_tokens"]) == (3, 30, 18) and b["wall_s"] >= 0
    rows = [json.loads(x) for x in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert all(row["responses"] == [" The answer is 4."] * 2 for row in rows)
    assert res["results"]["arithmetic"]["exact_match"] == pytest.approx(sum(row["metrics"]["exact_match"] for row in rows) / 3)
    assert files_holding(tmp_path, SECRET) == []  # not in config.json, results.json, samples, cache or logs
    assert SECRET not in r.stderr + r.stdout

    again = llmgen(tmp_path, "eval", "--backend", "openai-chat", "--base-url", url, "--tasks", "arithmetic",
                   "--limit", "3", "--num-samples", "2", "--temperature", "0.7", "--output-dir", "run2")
    assert again.returncode == 0 and len(srv.bodies) == 3  # all from the cache (the key holds no API key)
    url_b, srv_b = api(model_id="served-b")  # another server: its own cache entries
    other = llmgen(tmp_path, "eval", "--backend", "openai-chat", "--base-url", url_b, "--tasks", "arithmetic",
                   "--limit", "3", "--num-samples", "2", "--temperature", "0.7", "--output-dir", "run3")
    assert other.returncode == 0 and len(srv_b.bodies) == 3
    assert json.loads((tmp_path / "run3" / "results.json").read_text())["cache"]["hits"] == 0


def test_api_key_env_names_the_variable(tmp_path, api):
    url, srv = api()
    r = llmgen(tmp_path, "eval", "--backend", "openai-chat", "--base-url", url, "--api-key-env", "LAB_KEY",
               "--tasks", "arithmetic", "--limit", "1", "--no-cache", "--output-dir", "run", env={"LAB_KEY": SECRET})
    assert r.returncode == 0, r.stderr[-2000:]
    assert srv.bodies[0][2] == f"Bearer {SECRET}" and files_holding(tmp_path, SECRET) == []
    assert json.loads((tmp_path / "run" / "config.json").read_text())["model_args"]["api_key_env"] == "LAB_KEY"
    unset = llmgen(tmp_path, "eval", "--backend", "openai-chat", "--base-url", url, "--api-key-env", "NO_SUCH_KEY",
                   "--tasks", "arithmetic", "--limit", "1", "--no-cache", "--output-dir", "run2")
    assert unset.returncode == 2 and error_lines(unset.stderr) == [
        "error: --api-key-env NO_SUCH_KEY: the environment variable NO_SUCH_KEY is not set"]
    inline = llmgen(tmp_path, "eval", "--backend", "openai-chat", "--base-url", url, "--model-args",
                    f"api_key={SECRET}", "--tasks", "arithmetic", "--limit", "1", "--output-dir", "run3")
    assert inline.returncode == 2 and len(error_lines(inline.stderr)) == 1
    assert "$OPENAI_API_KEY" in inline.stderr and not (tmp_path / "run3").exists()
    assert files_holding(tmp_path, SECRET) == [] and len(srv.bodies) == 1


def test_loglikelihood_tasks_are_refused_before_any_request(tmp_path, api):
    url, srv = api()
    r = llmgen(tmp_path, "eval", "--backend", "openai-chat", "--base-url", url, "--tasks", "arithmetic,sentiment",
               "--limit", "2", "--output-dir", "run")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert error_lines(r.stderr) == ["error: the openai-chat backend cannot run task 'sentiment': it is a "
                                     "multiple_choice task and this backend runs only generate tasks (text out, no "
                                     "token logprobs); use --backend openai, vllm or hf"]
    assert srv.bodies == [] and not (tmp_path / "run").exists()


@pytest.mark.parametrize("mode, message", [
    ("html", "answered /chat/completions with text/html, not JSON: '<html><body>Welcome to nginx!</body></html>'"),
    ("shape", 'answered /chat/completions without a list of choices: {"result": "ok"}'),
])
def test_bad_answers_are_one_line_and_never_cached(tmp_path, api, mode, message):
    """A garbage answer stops the run in one line and stores nothing; a good server then answers
    the same command (no stale garbage in the cache)."""
    url, srv = api(mode=mode)
    args = ["eval", "--backend", "openai-chat", "--base-url", url, "--tasks", "arithmetic", "--limit", "2"]
    r = llmgen(tmp_path, *args, "--output-dir", "bad")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(error_lines(r.stderr)) == 1 and message in error_lines(r.stderr)[0], r.stderr[-2000:]
    assert not (tmp_path / "bad" / "results.json").exists()
    import sqlite3

    with sqlite3.connect(tmp_path / "cache" / "requests.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM cache").fetchone()[0] == 0
    srv.mode = "ok"  # the same server, fixed
    good = llmgen(tmp_path, *args, "--output-dir", "good")
    assert good.returncode == 0, good.stderr[-2000:]


def test_a_server_that_never_answers_times_out_in_one_line(tmp_path, api):
    url, srv = api(mode="hang")
    t0 = time.time()
    r = llmgen(tmp_path, "eval", "--backend", "openai-chat", "--base-url", url, "--model-args", "timeout=1",
               "--tasks", "arithmetic", "--limit", "1", "--output-dir", "run")
    assert time.time() - t0 < 60 and r.returncode == 2 and "Traceback" not in r.stderr
    assert error_lines(r.stderr) == [f"error: server {url} accepted the connection but sent no answer to "
                                     "/chat/completions within 1 s (2 tries); if one request needs longer, "
                                     "raise --model-args timeout=SECONDS"]
    assert "failed (no answer within 1 s); retry 1/6" in r.stderr  # the wait is shown while it happens
    assert len(srv.bodies) == 2


def test_completions_backend_sends_text_and_cuts_stops_itself(api):
    url, srv = api()
    be = get_backend("openai-completions", "default", base_url=url)
    out = be.generate(["Question: 2+2?\nAnswer:"], SamplingConfig(max_tokens=8, stop=("\n",)))
    assert srv.bodies[0][0] == "/v1/completions" and srv.bodies[0][1]["prompt"] == "Question: 2+2?\nAnswer:"
    assert out[0][0].text == " 4" and out[0][0].finish_reason == "stop"
    assert be.describe()["tokenization"] == "server" and be.describe()["requests"] == 1
    with pytest.raises(LlmgenError, match="sends text prompts; chat messages need --backend openai-chat"):
        be.generate([[{"role": "user", "content": "hi"}]], SamplingConfig(max_tokens=2))
    with pytest.raises(LlmgenError, match="serves no model 'gpt-9'"):
        get_backend("openai-chat", "gpt-9", base_url=url)


@pytest.mark.parametrize("mode", ["html", "shape"])
def test_token_backend_checks_answers_before_the_cache_stores_them(tmp_path, api, tiny_model_dir, mode):
    """The `openai` (token-id) backend behind the request cache: a bad answer is one error line and
    the cache stays empty."""
    from llmgen.backends.cached import CachedBackend
    from llmgen.cache import RequestCache

    url, srv = api(mode=mode)
    cache = RequestCache(tmp_path / "requests.sqlite")
    cached = CachedBackend(get_backend("openai", tiny_model_dir, base_url=url), cache)
    with pytest.raises(LlmgenError, match="not JSON|without a list of choices") as e:
        cached.generate(["Hello"], SamplingConfig(max_tokens=2))
    assert "\n" not in str(e.value) and len(cache) == 0
    with pytest.raises(LlmgenError):
        cached.loglikelihood([("Hello", " world")])
    assert len(cache) == 0 and len(srv.bodies) == 2
