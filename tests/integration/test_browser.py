"""A real browser (Debian's headless Chromium) against the front (issue 16): a page on another origin
posts a job with fetch() and reads its stream with EventSource, the way a web UI does, and does not
close the EventSource after [DONE]. Needs --cors-origin for the page's origin (preflight and response
headers), and the 204 that stops the browser's reconnects once the whole stream has gone out."""
import http.server
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading

import pytest

from harness import Worker, free_port

CHROMIUM = shutil.which("chromium")
BROWSER_DEADLINE_S = 45

PAGE = """<!doctype html><meta charset="utf-8"><title>beeworker</title><script>
const api = "http://127.0.0.1:%(worker)d";
function report(x) { fetch("/result", {method: "POST", body: JSON.stringify(x)}); }
async function main() {
  let status = 0;
  try {
    const r = await fetch(api + "/v1/inference", {method: "POST", headers: {"Content-Type": "application/json"},
                                                  body: JSON.stringify({prompt: "Hello", max_tokens: 5, temperature: 0})});
    status = r.status;
    const job = await r.json();
    const es = new EventSource(api + job.sse_url);
    const events = [];
    let opens = 0;
    es.onopen = () => { opens++; };
    es.onmessage = (e) => { events.push({id: e.lastEventId, data: e.data}); };
    // not closed after [DONE]: the browser reconnects with Last-Event-ID; the worker's 204 ends that
    es.onerror = () => { if (es.readyState === EventSource.CLOSED) report({status, events, opens}); };
  } catch (e) {
    report({status, error: String(e)});
  }
}
main();
</script>"""


class PageServer:
    """The web UI's origin: serves the page and receives its report."""

    def __init__(self, worker_port, port):
        self.result, self.got = None, threading.Event()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                body = (PAGE % {"worker": worker_port}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                outer.result = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.got.set()
                self.send_response(204)
                self.end_headers()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def run_browser(url, done, deadline_s):
    """Headless Chromium on url until done is set (or the deadline); its whole process group is killed
    and the browser waited for."""
    profile = tempfile.mkdtemp(prefix="bw-chromium-")
    p = subprocess.Popen([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                          "--no-first-run", "--no-default-browser-check", f"--user-data-dir={profile}", url],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        done.wait(deadline_s)
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)  # the browser's group: its renderer and helper processes
        except ProcessLookupError:
            pass
        p.wait(10)
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.skipif(not CHROMIUM, reason="Debian's chromium is not installed (scripts/setup-deps.sh installs it)")
def test_a_web_page_on_another_origin_streams_a_job_with_eventsource(build_dir, model_path):
    page_port = free_port()
    with Worker(build_dir, model_path, slots=1, extra=["--cors-origin", f"http://127.0.0.1:{page_port}"]) as w:
        w.wait_ready()
        page = PageServer(w.port, page_port)
        try:
            run_browser(f"http://127.0.0.1:{page_port}/", page.got, BROWSER_DEADLINE_S)
        finally:
            page.close()
    r = page.result
    assert r is not None, "the page never reported: the browser kept reconnecting or could not call the worker"
    assert "error" not in r and r["status"] == 200, r
    data = [e["data"] for e in r["events"]]
    kinds = [json.loads(d)["type"] if d != "[DONE]" else d for d in data]
    assert kinds == ["started"] + ["token"] * 5 + ["end", "[DONE]"], kinds  # end and [DONE] exactly once
    assert r["opens"] == 1, r
    assert [e["id"] for e in r["events"]][:6] == [str(i) for i in range(6)]
