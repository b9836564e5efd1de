"""Auth of SPEC §3.1: the missing/wrong/right token matrix on every protected route, the public ones,
--local-mode listening on 127.0.0.1 only, the combinations the front refuses to start with, and that the
token reaches no log line and no child process."""
import os
import pathlib
import subprocess

import pytest

from harness import LOG_DIR, Worker, ready_worker, wait_until

TOKEN = "s3cr3t-Token-value-7f2a9c41"


def listening_addresses(port):
    """Local addresses in LISTEN state on port, from /proc/net/tcp (IPv4)."""
    found = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:
                found.add(".".join(str(b) for b in reversed(bytes.fromhex(addr))))
    return found


@pytest.fixture(scope="module")
def secured(build_dir, model_path):
    yield from ready_worker(build_dir, model_path, local_mode=False, token=TOKEN, slots=2)


PROTECTED = [("GET", "/info", None), ("POST", "/v1/inference", {"prompt": "Hi", "max_tokens": 1}),
             ("POST", "/v1/jobs", {"prompt": "Hi", "max_tokens": 1}), ("GET", "/v1/jobs/job-x/stream", None),
             ("DELETE", "/v1/inference/job-x", None), ("GET", "/v1/models", None),
             ("POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 1}),
             ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}),
             ("GET", "/nonexistent", None)]


@pytest.mark.parametrize("method,path,body", PROTECTED, ids=[f"{m} {p}" for m, p, _ in PROTECTED])
def test_token_matrix(secured, method, path, body):
    secured.token = None
    try:
        status, resp, headers = secured.request(method, path, body)
        assert status == 401 and resp["error"]["code"] == "MISSING_API_KEY", resp
        assert headers.get("WWW-Authenticate", headers.get("www-authenticate")) == "Bearer"
        for wrong in ["Bearer nope", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Basic {TOKEN}", TOKEN,
                      f"Bearer {TOKEN.upper()}", f"Bearer  {TOKEN}", f"Bearer {TOKEN} ", f"Bearer {TOKEN}  "]:
            status, resp, _ = secured.request(method, path, body, headers={"Authorization": wrong})
            assert status == 401 and resp["error"]["code"] == "INVALID_API_KEY", (wrong, resp)
            assert TOKEN not in str(resp)
        status, resp, _ = secured.request(method, path, body, headers={"Authorization": "Bearer "})
        assert status == 401 and resp["error"]["code"] == "MISSING_API_KEY"
    finally:
        secured.token = TOKEN
    status, resp, _ = secured.request(method, path, body, headers={"Authorization": f"bearer {TOKEN}"})
    assert status not in (401, 403), resp


def test_health_and_metrics_are_public(secured):
    secured.token = None
    try:
        assert secured.request("GET", "/health")[0] == 200
        assert secured.request("GET", "/metrics")[0] == 200
    finally:
        secured.token = TOKEN


def test_metrics_auth_flag_protects_metrics(build_dir):
    with Worker(build_dir, local_mode=False, token=TOKEN, spawn=False, extra=["--metrics-auth"]) as w:
        w.token = None
        assert w.request("GET", "/metrics")[1]["error"]["code"] == "MISSING_API_KEY"
        w.token = TOKEN
        assert w.request("GET", "/metrics")[0] == 200


def test_token_file_works_and_network_mode_binds_all(build_dir, tmp_path):
    tf = tmp_path / "token"
    tf.write_text(TOKEN + "\n")  # systemd credentials end with a newline
    with Worker(build_dir, local_mode=False, spawn=False, extra=["--api-token-file", str(tf)]) as w:
        assert listening_addresses(w.port) == {"0.0.0.0"}
        w.token = TOKEN
        assert w.request("GET", "/info")[0] == 200
        w.token = "other"
        assert w.request("GET", "/info")[0] == 401


def test_local_mode_listens_on_loopback_only_without_auth(build_dir):
    with Worker(build_dir, local_mode=True, spawn=False) as w:
        assert listening_addresses(w.port) == {"127.0.0.1"}
        assert w.request("GET", "/info")[0] == 200
        assert w.request("GET", "/info", headers={"Authorization": "Bearer anything"})[0] == 200


def run_front(build_dir, args, env_token=None, timeout=15):
    env = dict(os.environ)
    env.pop("LLORCH_API_TOKEN", None)
    if env_token is not None:
        env["LLORCH_API_TOKEN"] = env_token
    p = subprocess.run([str(build_dir / "frontend" / "beeworker-front"), "--port", "0"] + args, env=env,
                       capture_output=True, timeout=timeout)
    return p.returncode, p.stdout.decode() + p.stderr.decode()


def test_refuses_to_start_on_bad_auth_configurations(build_dir, tmp_path):
    empty = tmp_path / "empty"
    empty.write_text("\n")
    good = tmp_path / "good"
    good.write_text(TOKEN)
    cases = [
        ([], None, "needs a bearer token"),                                   # network mode, no token
        ([], "", "needs a bearer token"),                                     # an empty variable is no token
        (["--local-mode"], TOKEN, "--local-mode"),                            # token + local mode
        (["--local-mode", "--api-token-file", str(good)], None, "--local-mode"),
        (["--api-token-file", str(empty)], None, "empty token"),
        (["--api-token-file", str(tmp_path / "missing")], None, "cannot read token file"),
        (["--local-mode", "--bind", "0.0.0.0"], None, "loopback"),
    ]
    outputs = []
    for args, env_token, why in cases:
        rc, out = run_front(build_dir, args, env_token)
        outputs.append(out)
        assert rc != 0, (args, out)
        assert why in out, (args, out)
        assert len(out.strip().splitlines()) == 1, f"a one-line error, got {out!r}"
        assert TOKEN not in out


def test_token_reaches_no_log_and_no_child(secured, build_dir):
    # exercise every path that logs: requests, failures, a job, a stream
    secured.request("GET", "/info", headers={"Authorization": f"Bearer {TOKEN}-wrong"})
    secured.request("GET", f"/v1/jobs/{TOKEN}/stream")
    secured.request("POST", "/v1/inference", {"prompt": TOKEN[:0] + "Hi", "max_tokens": 2})
    secured.run("Hello", 3)
    engine_pid = secured.info()["engine"]["pid"]
    environ = pathlib.Path(f"/proc/{engine_pid}/environ").read_bytes()
    assert b"LLORCH_API_TOKEN" not in environ and TOKEN.encode() not in environ
    front_environ = pathlib.Path(f"/proc/{secured.front_pid}/environ").read_bytes()
    assert TOKEN.encode() not in front_environ, "the front's own environment still shows the token"
    log = secured.log_path.read_text(errors="replace")
    assert "request" in log and "job finished" in log
    # the path above carried the token on purpose: a client putting it in a URL is its own doing; but the
    # Authorization header value must never show up
    assert f"Bearer {TOKEN}" not in log and f"{TOKEN}-wrong" not in log
    leaks = [p.name for p in LOG_DIR.glob("front-*.log")
             if f"Bearer {TOKEN}" in p.read_text(errors="replace")]
    assert not leaks, leaks


def test_json_log_lines(build_dir):
    """LLORCH_LOG_FORMAT=json: every line is one JSON object; request lines carry their fields."""
    import json
    os.environ["LLORCH_LOG_FORMAT"] = "json"
    try:
        w = Worker(build_dir, local_mode=True, spawn=False)
    finally:
        del os.environ["LLORCH_LOG_FORMAT"]
    with w:
        w.request("GET", "/info")
        w.request("GET", "/nope")
        assert wait_until(lambda: w.log_text().count('"msg":"request"') >= 2, 5)
        lines = [json.loads(line) for line in w.log_text().splitlines() if line.strip()]
    reqs = [x for x in lines if x["msg"] == "request"]
    assert {(r["method"], r["path"], r["status"]) for r in reqs} >= {("GET", "/info", 200), ("GET", "/nope", 404)}
    assert all(isinstance(r["duration_ms"], (int, float)) and r["job_id"] == "-" for r in reqs)
