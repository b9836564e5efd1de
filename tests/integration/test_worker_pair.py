"""The worker pair of issue 3, end to end: the real beeworker-front, the real beeworker-engine (spawned
and supervised by the front) and the real default model. No fakes: every generated text comes from the
model."""
import os
import signal
import threading
import time

import pytest

from harness import SseStream, Worker, pid_alive, port_listening, ready_worker, start_engine, wait_until

STORY = "Once upon a time"
PROMPTS = ["Once upon a time", "The capital of France is", "def fibonacci(n):", "My favourite food is"]


@pytest.fixture(scope="module")
def pair(build_dir, model_path):
    yield from ready_worker(build_dir, model_path, slots=4)


def tokens_of(events):
    return [e for e in events if isinstance(e["data"], dict) and e["data"]["type"] == "token"]


def terminal_of(events):
    ends = [e for e in events if isinstance(e["data"], dict) and e["data"]["type"] in ("end", "error")]
    assert ends, f"no terminal event in {events[-3:]}"
    assert events[-1]["data"] == "[DONE]"
    return ends[-1]["data"]


def test_tokens_are_delivered_as_they_are_sampled(pair):
    _, url = pair.submit(STORY, 96)
    t_open = time.time_ns()
    with pair.stream(url + "?timing=1") as s:
        assert s.status == 200
        assert s.headers.get("content-type") == "text/event-stream"
        assert s.headers.get("cache-control") == "no-cache"
        assert s.headers.get("x-accel-buffering") == "no"
        events = list(s.events())
    assert events[0]["id"] == 0 and events[0]["data"]["type"] == "started"
    toks = tokens_of(events)
    end = terminal_of(events)
    assert end["type"] == "end" and end["stop_reason"] == "MAX_TOKENS", end
    assert len(toks) == 96 and [t["data"]["i"] for t in toks] == list(range(96))
    assert [t["id"] for t in toks] == list(range(1, 97))

    latencies_ms = [(t["recv_ns"] - t["data"]["ts_ns"]) / 1e6 for t in toks]
    assert max(latencies_ms) < 50, f"delivery latency up to {max(latencies_ms):.1f} ms"
    arrivals = [t["recv_ns"] for t in toks]
    # An engine that generated everything first and published afterwards delivers every token at the
    # end: the first would arrive after the last had been produced, and the spread would collapse.
    assert arrivals[0] < toks[48]["data"]["ts_ns"], "first token arrived after the engine produced half"
    spread = arrivals[-1] - arrivals[0]
    assert spread > 0.5 * (arrivals[-1] - t_open), "arrivals bunch at the end of the generation"
    gaps = sorted(b - a for a, b in zip(arrivals, arrivals[1:]))
    assert gaps[len(gaps) // 2] > 0.2 * spread / len(gaps), "most tokens arrived together"


def read_all(worker, url, out, key):
    with worker.stream(url + "?timing=1", timeout=60) as s:
        out[key] = list(s.events())


def test_concurrent_jobs_interleave_and_match_solo_runs(pair):
    solo = {p: pair.run(p, 32)[0] for p in PROMPTS}
    for n in (2, 4):
        urls = [pair.submit(p, 32)[1] for p in PROMPTS[:n]]
        out = {}
        threads = [threading.Thread(target=read_all, args=(pair, u, out, i)) for i, u in enumerate(urls)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert len(out) == n
        spans = []
        for i in range(n):
            toks = tokens_of(out[i])
            assert terminal_of(out[i])["type"] == "end"
            text = "".join(t["data"]["t"] for t in toks)
            assert text == solo[PROMPTS[i]], f"{n} concurrent: job {i} differs from its solo run"
            spans.append((toks[0]["recv_ns"], toks[-1]["recv_ns"]))
        # interleaved: every job's first token came before every other job's last token
        for a in spans:
            for b in spans:
                assert a[0] < b[1], f"{n} concurrent jobs did not stream interleaved: {spans}"


def test_client_disconnect_frees_the_slot(pair):
    _, url = pair.submit(STORY, 2000)
    s = pair.stream(url)
    got = 0
    for e in s.events():
        if isinstance(e["data"], dict) and e["data"]["type"] == "token":
            got += 1
            if got == 3:
                break
    # /info reports the engine's last HELLO, which is at most 200 ms old
    assert wait_until(lambda: pair.info()["engine"]["slots"]["busy"] >= 1, 1.0, 0.02)
    s.close()
    t0 = time.monotonic()
    # the job waits --reconnect-grace (3 s by default) for a reconnect, then its slot is free within a step
    assert wait_until(lambda: pair.info()["engine"]["slots"]["busy"] == 0, 5.0, 0.05), "slot still busy after 5 s"
    assert time.monotonic() - t0 < 5.0


def test_http_errors(pair, build_dir):
    status, body, _ = pair.request("POST", "/v1/inference", b'{"prompt": "hi", "max_tokens": ')
    assert status == 400 and body["error"]["code"] == "INVALID_JSON"
    status, body, _ = pair.request("POST", "/v1/inference", {"prompt": "", "max_tokens": 0, "top_p": 7})
    assert status == 400 and {e["field"] for e in body["errors"]} == {"prompt", "max_tokens", "top_p"}
    status, body, _ = pair.request("GET", "/v1/inference/job-does-not-exist/stream")
    assert status == 404
    _, url = pair.submit(STORY, 200)
    with pair.stream(url) as first:
        assert first.status == 200
        with pair.stream(url) as second:
            assert second.status == 409
            second.body()
    # network mode: a token is mandatory and checked
    with Worker(build_dir, spawn=False, local_mode=False, token="s3cret-token") as w:
        status, body, _ = w.request("GET", "/info", headers={"Authorization": ""})
        assert status == 401 and body["error"]["code"] == "MISSING_API_KEY"
        status, body, _ = w.request("GET", "/info", headers={"Authorization": "Bearer wrong"})
        assert status == 401 and body["error"]["code"] == "INVALID_API_KEY"
        status, _, _ = w.request("POST", "/v1/inference", {"prompt": "x", "max_tokens": 1},
                                 headers={"Authorization": ""})
        assert status == 401
        assert w.request("GET", "/info")[0] == 200
        assert w.request("GET", "/health", headers={"Authorization": ""})[0] == 503  # public, no engine


def test_engine_kill_9_mid_stream(build_dir, model_path):
    # --engine-wait 0: no resume (tests/integration/test_resume.py covers that); ENGINE_LOST at once
    with Worker(build_dir, model_path, extra=["--engine-wait", "0"]) as w:
        w.wait_ready()
        engine_pid = w.info()["engine"]["pid"]
        _, url = w.submit(STORY, 1000)
        with w.stream(url) as s:
            killed_at = None
            events = []
            for e in s.events():
                events.append(e)
                if killed_at is None and len(tokens_of(events)) == 5:
                    os.kill(engine_pid, signal.SIGKILL)
                    killed_at = time.time_ns()
        end = terminal_of(events)
        assert end["type"] == "error" and end["code"] == "ENGINE_LOST", end
        error_ev = [e for e in events if isinstance(e["data"], dict) and e["data"]["type"] == "error"][0]
        lost_ms = (error_ev["recv_ns"] - killed_at) / 1e6
        assert lost_ms < 100, f"ENGINE_LOST took {lost_ms:.1f} ms"
        assert w.proc.poll() is None and w.front_pid == w.proc.pid
        assert wait_until(lambda: w.health() == 200, 20, 0.05), "engine did not come back"
        assert w.info()["engine"]["pid"] not in (0, engine_pid)
        text, events = w.run(STORY, 16)
        assert terminal_of(events)["stop_reason"] == "MAX_TOKENS" and len(tokens_of(events)) == 16


def test_sigterm_stops_front_and_engine(build_dir, model_path):
    w = Worker(build_dir, model_path)
    try:
        w.wait_ready()
        engine_pid = w.info()["engine"]["pid"]
        _, url = w.submit(STORY, 1000)
        s = w.stream(url)
        it = s.events()
        next(it)  # started
        t0 = time.monotonic()
        w.proc.send_signal(signal.SIGTERM)
        rest = list(it)
        assert rest and rest[-1]["data"] == "[DONE]", "the open stream did not get a terminal event"
        w.proc.wait(timeout=3)
        assert wait_until(lambda: not pid_alive(engine_pid), 3 - (time.monotonic() - t0))
        assert time.monotonic() - t0 < 3.0
        assert w.proc.returncode == 0
        assert not (w.rundir / "jobs.ipc").exists() and not (w.rundir / "tokens.ipc").exists()
        assert not port_listening(w.port)
        s.close()
    finally:
        w.close()


def _longest_gap_during_a_long_prefill(build_dir, model_path, extra):
    """Job A streams; job B brings a ~1500-token prompt. Returns A's longest gap between two tokens (engine
    publish times, ms) while B prefilled, and B's time to first token (ms)."""
    w = Worker(build_dir, spawn=False, extra=["--engine-wait", "30"])
    eng = start_engine(build_dir, model_path, w.rundir, ["--slots", "2", "--ctx", "2048", *extra])
    try:
        w.wait_ready()
        _, url_a = w.submit(STORY, 1500)
        long_prompt = " ".join(f"Entry {i}: the hive at site {i % 17} sent {i * 3} bees north." for i in range(95))
        out, b_started = {}, {}
        with w.stream(url_a + "?timing=1", timeout=120) as sa:
            a_events = sa.events()
            for e in a_events:  # A is decoding before B arrives
                if isinstance(e["data"], dict) and e["data"]["type"] == "token" and e["data"]["i"] == 20:
                    break
            t_b = time.time_ns()
            _, url_b = w.submit(long_prompt, 4)

            def read_b():
                with w.stream(url_b + "?timing=1", timeout=120) as sb:
                    for ev in sb.events():
                        if isinstance(ev["data"], dict) and ev["data"]["type"] == "token":
                            b_started.setdefault("ts", ev["data"]["ts_ns"])
            tb = threading.Thread(target=read_b)
            tb.start()
            a_ts = []
            for e in a_events:
                if isinstance(e["data"], dict) and e["data"]["type"] == "token":
                    a_ts.append(e["data"]["ts_ns"])
                    if "ts" in b_started and e["data"]["ts_ns"] > b_started["ts"] + 200_000_000:
                        break
            tb.join(120)
        assert "ts" in b_started, "job B never produced a token"
        window = [t for t in a_ts if t_b <= t <= b_started["ts"] + 100_000_000]
        gaps = [(b - a) / 1e6 for a, b in zip(window, window[1:])]
        return max(gaps), (b_started["ts"] - t_b) / 1e6
    finally:
        eng.send_signal(signal.SIGTERM)
        eng.wait(timeout=30)
        w.close()


def test_decode_keeps_flowing_while_a_long_prompt_prefills(build_dir, model_path):
    # By default the engine feeds a prompt beside decoding jobs in chunks of about 50 ms of work; with
    # --prefill-step-ms 0 it feeds whole 512-token chunks, and the decoding job waits for each of them.
    limited, ttft_limited = _longest_gap_during_a_long_prefill(build_dir, model_path, [])
    whole, ttft_whole = _longest_gap_during_a_long_prefill(build_dir, model_path, ["--prefill-step-ms", "0"])
    print(f"\nlongest gap of the decoding job while a ~1500-token prompt prefills: {limited:.0f} ms in ~50 ms "
          f"chunks (prompt's first token after {ttft_limited:.0f} ms), {whole:.0f} ms in 512-token chunks "
          f"(after {ttft_whole:.0f} ms)")
    assert limited < 250, f"the decoding job stalled {limited:.0f} ms"
    assert whole > 2 * limited, (whole, limited)
