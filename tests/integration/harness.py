"""Process harness for integration tests: starts beeworker-front (and, through --spawn-engine, the
engine) with deadlines, talks HTTP/SSE to it, and on teardown kills and waits for every process it
started, by PID only, failing the test if one survives or leaves ipc files or a listening port behind."""
import http.client
import json
import os
import pathlib
import signal
import socket
import subprocess
import tempfile
import time

START_DEADLINE_S = 30.0
LOG_DIR = pathlib.Path(__file__).resolve().parents[1] / ".cache" / "logs"  # git-ignored
# Under a sanitizer build (scripts/test.sh's second pass sets BW_SANITIZED=1) the front is stopped with
# SIGTERM first, so the engine it supervises exits normally and both run LeakSanitizer on the way out
# (common/quit.h); any report in the log fails the test either way.
SANITIZED = os.environ.get("BW_SANITIZED") == "1"
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:")


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_listening(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def rss_kb(pid):
    """Resident memory of a process in KiB (VmRSS), 0 if it has none."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_seconds(pid):
    """User + system CPU time a process has used so far, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_alive(pid):
    """True while pid exists and is not a zombie (a reparented child may stay a zombie in a container)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def read_until_closed(s, deadline_s, partial=False):
    """All bytes the server sends on socket s until it closes (or resets) the connection. At the deadline:
    None (the server kept it open), or with partial=True the bytes received so far."""
    s.settimeout(0.2)
    data, end = b"", time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return data if partial else None


def wait_until(pred, timeout, interval=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def start_engine(build_dir, model_path, rundir, extra=()):
    """A beeworker-engine daemon for a front started with spawn=False, logging under LOG_DIR. The caller
    stops it (SIGTERM) and waits for it."""
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    log = open(LOG_DIR / f"engine-{pathlib.Path(rundir).name}-{time.monotonic_ns()}.log", "wb")
    p = subprocess.Popen([str(build_dir / "engine" / "beeworker-engine"), "--model", str(model_path), "--rundir",
                          str(rundir), *extra], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    return p


class Closing:
    """`with X(...) as x:` calls x.close() on the way out."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Worker(Closing):
    """A front with a supervised engine (or none). Use as a context manager or call close()."""

    def __init__(self, build_dir, model=None, local_mode=True, token=None, spawn=True, slots=4, extra=(),
                 log_dir=None, preexec_fn=None):
        self.port = free_port()
        self.rundir = pathlib.Path(tempfile.mkdtemp(prefix="bwt-", dir="/tmp"))
        self.token = token
        self.engine_pids = set()
        argv = [str(build_dir / "frontend" / "beeworker-front"), "--port", str(self.port), "--rundir",
                str(self.rundir)]
        if local_mode:
            argv.append("--local-mode")
        if spawn:
            argv += ["--spawn-engine", "--model", str(model), "--slots", str(slots)]
        argv += list(extra)
        env = dict(os.environ)
        env.pop("LLORCH_API_TOKEN", None)
        if token:
            env["LLORCH_API_TOKEN"] = token
        log_dir = pathlib.Path(log_dir or LOG_DIR)
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"front-{self.port}.log"
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env, preexec_fn=preexec_fn)
        self.front_pid = self.proc.pid
        if not wait_until(lambda: port_listening(self.port) or self.proc.poll() is not None, START_DEADLINE_S):
            self.close()
            raise RuntimeError(f"front did not listen within {START_DEADLINE_S}s; log: {self.log_text()}")
        if self.proc.poll() is not None:
            self.close()
            raise RuntimeError(f"front exited with {self.proc.returncode}; log: {self.log_text()}")

    def log_text(self):
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # ---- HTTP ----
    def headers(self, extra=None):
        h = {}
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        h.update(extra or {})
        return h

    def request(self, method, path, body=None, headers=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
            h = self.headers(headers)
            if data is not None and "Content-Type" not in h:
                h["Content-Type"] = "application/json"
            conn.request(method, path, body=data, headers=h)
            r = conn.getresponse()
            raw = r.read()
            try:
                payload = json.loads(raw) if raw else None
            except ValueError:
                payload = raw
            return r.status, payload, dict(r.getheaders())
        finally:
            conn.close()

    def info(self):
        status, body, _ = self.request("GET", "/info")
        assert status == 200, (status, body)
        self.engine_pids.add(body["engine"]["pid"]) if body["engine"]["pid"] else None
        return body

    def health(self):
        return self.request("GET", "/health")[0]

    def wait_ready(self, timeout=START_DEADLINE_S):
        if not wait_until(lambda: self.health() == 200, timeout, 0.05):
            raise AssertionError(f"engine not ready within {timeout}s; log: {self.log_text()}")
        self.info()

    def submit(self, prompt, max_tokens, **kw):
        body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
        body.update(kw)
        status, resp, _ = self.request("POST", "/v1/inference", body)
        assert status == 200, (status, resp)
        return resp["job_id"], resp["sse_url"]

    def stream(self, url, headers=None, timeout=30):
        return SseStream(self.port, url, self.headers(headers), timeout)

    def run(self, prompt, max_tokens, timeout=60, **kw):
        """Submits and reads to the end; returns (text, events)."""
        _, url = self.submit(prompt, max_tokens, **kw)
        with self.stream(url + "?timing=1", timeout=timeout) as s:
            events = list(s.events())
        text = "".join(e["data"]["t"] for e in events if isinstance(e["data"], dict) and e["data"]["type"] == "token")
        return text, events

    # ---- teardown ----
    def close(self):
        """Kills the front and any engine it ran, by PID; raises if one survives."""
        try:
            if self.proc.poll() is None:
                try:
                    self.info()
                except Exception:
                    pass
                if SANITIZED:
                    self.proc.terminate()
                    try:
                        self.proc.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        pass
                if self.proc.poll() is None:
                    self.proc.kill()
            self.proc.wait(timeout=10)
        finally:
            self.log.close()
        survivors = []
        for pid in self.engine_pids:
            # the engine dies with its parent (PR_SET_PDEATHSIG); kill it by PID if it did not
            if not wait_until(lambda: not pid_alive(pid), 3.0):
                survivors.append(pid)
                os.kill(pid, signal.SIGKILL)
                wait_until(lambda: not pid_alive(pid), 3.0)
        for name in ("jobs.ipc", "tokens.ipc"):
            try:
                (self.rundir / name).unlink()  # a killed front cannot clean up; a test of cleanup checks first
            except FileNotFoundError:
                pass
        try:
            self.rundir.rmdir()
        except OSError:
            pass
        if survivors:
            raise AssertionError(f"engine processes survived the front: {survivors}")
        reports = [line for line in self.log_text_all().splitlines() if any(m in line for m in SANITIZER_MARKS)]
        if reports:
            raise AssertionError(f"sanitizer report in {self.log_path}: {reports[:5]}")

    def log_text_all(self):
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def ready_worker(build_dir, model=None, **kw):
    """A module fixture's body: starts a Worker, waits until its engine is ready, yields it and closes it
    afterwards (also when it never became ready). Use as `yield from ready_worker(build_dir, model_path, ...)`."""
    w = Worker(build_dir, model, **kw)
    try:
        w.wait_ready()
        yield w
    finally:
        w.close()


class SseStream(Closing):
    """A GET on an SSE url; events() yields dicts {recv_ns, id, data} as each arrives."""

    def __init__(self, port, url, headers, timeout):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.conn.request("GET", url, headers=headers)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = dict(self.resp.getheaders())

    def close(self):
        try:
            self.conn.sock and self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()

    def body(self):
        return self.resp.read()

    def events(self):
        ev_id, data = None, None
        while True:
            line = self.resp.readline()
            if not line:
                return
            line = line.decode().rstrip("\n")
            if line.startswith(":"):
                continue
            if line.startswith("id: "):
                ev_id = int(line[4:])
            elif line.startswith("data: "):
                data = line[6:]
            elif line == "" and data is not None:
                now = time.time_ns()
                payload = data if data == "[DONE]" else json.loads(data)
                yield {"recv_ns": now, "id": ev_id, "data": payload}
                if data == "[DONE]":
                    return
                ev_id, data = None, None
