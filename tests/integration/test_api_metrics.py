"""GET /metrics (SPEC §3.4) read by a real Prometheus text parser (prometheus_client's): every series
is there and well-formed, and the counters and histograms move as requests and jobs happen."""
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness import Worker, ready_worker, wait_until


@pytest.fixture(scope="module")
def worker(build_dir, model_path):
    yield from ready_worker(build_dir, model_path, slots=2)


def scrape(w):
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", w.port, timeout=10)
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    text = r.read().decode()
    conn.close()
    assert r.status == 200 and r.getheader("content-type").startswith("text/plain; version=0.0.4")
    samples = {}
    types = {}
    for fam in text_string_to_metric_families(text):
        types[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples, types


def val(samples, name, **labels):
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_every_series_is_exported_with_its_type(worker):
    _, types = scrape(worker)
    want = {"beeworker_http_requests": "counter", "beeworker_jobs": "counter",
            "beeworker_tokens_generated": "counter", "beeworker_time_to_first_token_seconds": "histogram",
            "beeworker_inter_token_latency_seconds": "histogram", "beeworker_queue_depth": "gauge",
            "beeworker_active_streams": "gauge", "beeworker_engine_state": "gauge",
            "beeworker_engine_restarts": "counter", "beeworker_jobs_running": "gauge",
            "beeworker_token_gaps_repaired": "counter", "beeworker_jobs_resumed": "counter"}
    for name, kind in want.items():
        assert types.get(name) == kind, (name, types.get(name))


def test_counters_move_with_requests_and_jobs(worker):
    before, _ = scrape(worker)
    assert val(before, "beeworker_engine_state", state="ready") == 1
    assert val(before, "beeworker_engine_state", state="down") == 0
    n = 12
    text, events = worker.run("Once upon a time", n)
    status, _, _ = worker.request("POST", "/v1/inference", {"prompt": "", "max_tokens": 1})
    assert status == 400
    worker.request("GET", "/no/such/path")
    after, _ = scrape(worker)

    route = "/v1/inference"
    assert val(after, "beeworker_http_requests_total", route=route, code="200") == \
        val(before, "beeworker_http_requests_total", route=route, code="200") + 1
    assert val(after, "beeworker_http_requests_total", route=route, code="400") == \
        val(before, "beeworker_http_requests_total", route=route, code="400") + 1
    assert val(after, "beeworker_http_requests_total", route="/v1/inference/{id}/stream", code="200") == \
        val(before, "beeworker_http_requests_total", route="/v1/inference/{id}/stream", code="200") + 1
    assert val(after, "beeworker_http_requests_total", route="other", code="404") >= 1
    assert val(after, "beeworker_jobs_total", reason="MAX_TOKENS") == val(before, "beeworker_jobs_total",
                                                                           reason="MAX_TOKENS") + 1
    assert val(after, "beeworker_tokens_generated_total") == val(before, "beeworker_tokens_generated_total") + n
    ttft = "beeworker_time_to_first_token_seconds"
    assert val(after, ttft + "_count") == val(before, ttft + "_count") + 1
    assert val(after, ttft + "_sum") > val(before, ttft + "_sum")
    itl = "beeworker_inter_token_latency_seconds"
    assert val(after, itl + "_count") == val(before, itl + "_count") + n - 1
    # buckets are cumulative and end at the count
    assert val(after, itl + "_bucket", le="+Inf") == val(after, itl + "_count")
    assert val(after, itl + "_bucket", le="0.001") <= val(after, itl + "_bucket", le="0.1")


def test_gauges_follow_open_streams(worker):
    _, url = worker.submit("Once upon a time", 2000)  # long enough to outlive the checks
    stream = worker.stream(url)
    first = threading.Event()

    def read():
        try:
            for _ in stream.events():
                first.set()
        except (OSError, ValueError, AttributeError):
            pass  # the test closes the stream under this reader
    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        assert first.wait(30)
        samples, _ = scrape(worker)
        assert val(samples, "beeworker_active_streams") == 1
        assert val(samples, "beeworker_jobs_running") == 1
    finally:
        stream.close()
        t.join(10)
    assert wait_until(lambda: val(scrape(worker)[0], "beeworker_active_streams") == 0, 10)
    assert wait_until(lambda: val(scrape(worker)[0], "beeworker_jobs_total", reason="CANCELLED") >= 1, 10)


def test_engine_restart_is_counted(build_dir, model_path):
    import os
    import signal
    with Worker(build_dir, model_path, slots=1) as w:
        w.wait_ready()
        pid = w.info()["engine"]["pid"]
        os.kill(pid, signal.SIGKILL)
        assert wait_until(lambda: w.health() == 200 and w.info()["engine"]["pid"] != pid, 30)
        samples, _ = scrape(w)
        assert val(samples, "beeworker_engine_restarts_total") == 1
        assert val(samples, "beeworker_engine_state", state="ready") == 1
