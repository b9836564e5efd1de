"""The heartbeat to the hive (SPEC §3.5), received by a mock hive (a real HTTP server on a thread of this
test): the first beat when the engine is first ready, the documented payload, the configured interval,
`degraded` while the engine is killed, and a front that does not notice a hive that is down, silent or
slow. The engine is started and killed by the test (not --spawn-engine) so that it stays down as long as
the test needs."""
import datetime
import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from harness import Worker, pid_alive, wait_until

INTERVAL_S = 1


class MockHive:
    """POST /v1/heartbeat recorder. mode: "ok", "slow" (answers after 8 s), "silent" (reads, never answers)."""

    def __init__(self):
        self.beats = []
        self.mode = "ok"
        self.release = threading.Event()
        hive = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                hive.beats.append((time.monotonic(), self.path, self.headers.get("Content-Type"), json.loads(body)))
                if hive.mode == "slow":
                    hive.release.wait(8)
                elif hive.mode == "silent":
                    hive.release.wait(30)
                    return
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *a):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def statuses(self):
        return [b[3]["health_status"] for b in self.beats]

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


class Engine:
    def __init__(self, build_dir, model, rundir, log):
        self.proc = subprocess.Popen([str(build_dir / "engine" / "beeworker-engine"), "--model", str(model),
                                      "--rundir", str(rundir), "--slots", "1", "--threads", "1"],
                                     stdout=log, stderr=log)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)


@pytest.fixture
def hive():
    h = MockHive()
    yield h
    h.close()


@pytest.fixture
def pair(build_dir, model_path, hive):
    w = Worker(build_dir, spawn=False, extra=["--hive-url", f"http://127.0.0.1:{hive.port}/",
                                              "--heartbeat-interval", str(INTERVAL_S), "--worker-id", "bee-7"])
    engines = []
    log = open(w.log_path.with_name(f"engine-{w.port}.log"), "wb")

    def start_engine():
        e = Engine(build_dir, model_path, w.rundir, log)
        engines.append(e)
        return e
    try:
        yield w, start_engine
    finally:
        for e in engines:
            e.kill()
        w.close()
        log.close()
        for e in engines:
            assert not pid_alive(e.proc.pid)


def test_first_beat_at_engine_ready_then_at_the_interval_with_payload(pair, hive):
    w, start_engine = pair
    time.sleep(1.5)
    assert hive.beats == [], "a beat before any engine was ready"
    start_engine()
    w.wait_ready()
    t_ready = time.monotonic()
    assert wait_until(lambda: len(hive.beats) >= 1, 5), w.log_text()
    assert hive.beats[0][0] - t_ready < 1.0, "the first beat should follow readiness at once"
    assert wait_until(lambda: len(hive.beats) >= 4, 10)
    times = [b[0] for b in hive.beats[:4]]
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(0.7 * INTERVAL_S < g < 2.5 * INTERVAL_S for g in gaps), gaps
    t, path, ctype, beat = hive.beats[0]
    assert path == "/v1/heartbeat" and ctype == "application/json"
    assert beat["worker_id"] == "bee-7" and beat["health_status"] == "healthy"
    ts = datetime.datetime.strptime(beat["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    assert abs((datetime.datetime.now(datetime.timezone.utc) - ts).total_seconds()) < 30
    info = beat["worker"]
    assert info["id"] == "bee-7" and info["implementation"] == "beeworker" and info["port"] == w.port
    assert info["status"] == "ready" and info["engine"]["state"] == "ready" and info["model_id"]
    assert set(info) >= {"id", "model_id", "device", "port", "status", "implementation", "version", "engine"}


def test_degraded_while_the_engine_is_down(pair, hive):
    w, start_engine = pair
    e = start_engine()
    w.wait_ready()
    assert wait_until(lambda: "healthy" in hive.statuses(), 5)
    e.kill()
    t_kill = time.monotonic()
    assert wait_until(lambda: "degraded" in hive.statuses(), 5), hive.statuses()
    first_degraded = next(b[0] for b in hive.beats if b[3]["health_status"] == "degraded")
    assert first_degraded - t_kill < 1.5, "a state change is reported at once, not at the next interval"
    degraded = [b[3] for b in hive.beats if b[3]["health_status"] == "degraded"][0]
    assert degraded["worker"]["engine"]["state"] in ("down", "restarting")
    n = len(hive.beats)
    assert wait_until(lambda: len(hive.beats) >= n + 2, 5), "beats go on while the engine is down"
    start_engine()
    w.wait_ready()
    assert wait_until(lambda: hive.statuses()[-1] == "healthy", 5)


def health_latency(w):
    t = time.monotonic()
    assert w.health() == 200
    return time.monotonic() - t


@pytest.mark.parametrize("mode", ["slow", "silent", "down"])
def test_front_unaffected_by_a_bad_hive(pair, hive, mode):
    w, start_engine = pair
    start_engine()
    w.wait_ready()
    assert wait_until(lambda: len(hive.beats) >= 1, 5)
    if mode == "down":
        hive.close()
    else:
        hive.mode = mode
    t_end = time.monotonic() + 7  # past the 5 s client timeout
    worst = 0.0
    while time.monotonic() < t_end:
        worst = max(worst, health_latency(w))
        text, events = w.run("Hello", 4)
        assert events[-2]["data"]["type"] == "end"
        time.sleep(0.1)
    assert worst < 0.5, f"/health took {worst:.3f}s while the hive was {mode}"
    full_log = lambda: w.log_path.read_text(errors="replace")  # noqa: E731 (log_text() is only the tail)
    assert wait_until(lambda: any("heartbeat to" in line and "failed" in line for line in full_log().splitlines()),
                      5), w.log_text()
    if mode != "down":
        n = len(hive.beats)
        hive.mode = "ok"
        hive.release.set()
        assert wait_until(lambda: len(hive.beats) > n, 8), "beats resume once the hive answers"


def test_unhealthy_once_the_supervisor_gives_up(build_dir, model_path, hive):
    """--spawn-engine gives up after --engine-max-crashes crashes in --engine-crash-window seconds; from then
    on no engine will come back, and the hive hears `unhealthy` (engine down or restarting is `degraded`)."""
    with Worker(build_dir, model_path, slots=1,
                extra=["--hive-url", f"http://127.0.0.1:{hive.port}/", "--heartbeat-interval", str(INTERVAL_S),
                       "--engine-max-crashes", "2", "--engine-crash-window", "60", "--threads", "1"]) as w:
        w.wait_ready()
        assert wait_until(lambda: "healthy" in hive.statuses(), 5)
        for crash in range(2):
            w.wait_ready()
            pid = w.info()["engine"]["pid"]
            os.kill(pid, signal.SIGKILL)
            assert wait_until(lambda: w.health() != 200, 5)
        assert wait_until(lambda: "unhealthy" in hive.statuses(), 10), hive.statuses()
        assert w.request("GET", "/health")[1]["engine"] == "down"
        assert "degraded" in hive.statuses(), "the first crash (engine restarting) is degraded, not unhealthy"
