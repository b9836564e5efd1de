"""Deployment as a systemd service pair (issue 7, SPEC §1): what `meson install` puts on a host, and the
processes the units start.

- Every installed unit passes `systemd-analyze verify` (offline, against the installed tree as --root),
  and the sysusers/tmpfiles entries apply to a scratch root.
- The exact commands of the installed units (ExecStart with systemd's specifier and variable expansion,
  Environment=, EnvironmentFile=, the credential directory, RuntimeDirectory=, User=, UMask=) survive:
  start, stream, restart the engine (also during a stream), stream, stop; no process or socket is left.
- READY=1 reaches a real notify socket from the engine only after the model is loaded, from the front
  only once it listens; both ping the watchdog; a spawned engine never speaks for the front's unit.
- With systemd as PID 1 (not on CI), the units run for real and the engine unit restarts mid-stream.
- --spawn-engine gives up after --engine-max-crashes exits and /health then says the engine is down."""
import array
import grp
import os
import pathlib
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest

from harness import SseStream, Worker, free_port, pid_alive, port_listening, wait_until

ROOT = pathlib.Path(__file__).resolve().parents[2]
UNITS = ["beeworker-front.service", "beeworker-engine.service", "beeworker-front@.service",
         "beeworker-engine@.service", "beeworker.target"]
SERVICE_USER = "beeworker"
TOKEN = "deploy-test-token-0123456789"
STOP_DEADLINE_S = 15  # TimeoutStopSec= of both units


# ---------------------------------------------------------------------------------------------------
# The installed tree
# ---------------------------------------------------------------------------------------------------

def meson_paths(build_dir):
    """prefix, bindir, sysconfdir as this build installs them."""
    out = subprocess.run(["meson", "introspect", "--buildoptions", str(build_dir)], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    import json
    opts = {o["name"]: o["value"] for o in json.loads(out)}
    prefix = pathlib.PurePosixPath(opts["prefix"])
    return prefix, prefix / opts["bindir"], prefix / opts["sysconfdir"]


@pytest.fixture(scope="module")
def installed(build_dir):
    """`meson install --destdir` into a scratch directory, as an unprivileged packager would."""
    dest = pathlib.Path(tempfile.mkdtemp(prefix="bw-deploy-"))
    try:
        r = subprocess.run(["meson", "install", "-C", str(build_dir), "--no-rebuild", "--quiet", "--destdir",
                            str(dest)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"meson install failed:\n{r.stdout}\n{r.stderr}"
        prefix, bindir, sysconfdir = meson_paths(build_dir)
        unitdir = dest / prefix.relative_to("/") / "lib/systemd/system"
        # the service user must reach the binaries through the scratch directory
        for p in [dest] + [q for q in dest.rglob("*") if q.is_dir()]:
            p.chmod(0o755)
        yield {"dest": dest, "prefix": prefix, "bindir": bindir, "sysconfdir": sysconfdir, "unitdir": unitdir}
    finally:
        shutil.rmtree(dest, ignore_errors=True)


def in_dest(inst, path):
    return inst["dest"] / pathlib.PurePosixPath(path).relative_to("/")


def test_meson_install_puts_everything_in_place(installed):
    dest, prefix = installed["dest"], installed["prefix"]
    for rel in ["bin/beeworker-front", "bin/beeworker-engine", "lib/sysusers.d/beeworker.conf",
                "lib/tmpfiles.d/beeworker.conf", "share/doc/beeworker/beeworker.env.example",
                "share/doc/beeworker/README.md"] + [f"lib/systemd/system/{u}" for u in UNITS]:
        path = dest / prefix.relative_to("/") / rel
        assert path.is_file(), f"{rel} is not installed"
    for u in UNITS:
        text = (installed["unitdir"] / u).read_text()
        assert not re.search(r"@[A-Z_]+@", text), f"{u} still holds an unsubstituted @VAR@"
        assert str(installed["bindir"]) in text or u.endswith(".target")


# ---------------------------------------------------------------------------------------------------
# 1. systemd-analyze verify, sysusers, tmpfiles
# ---------------------------------------------------------------------------------------------------

def analyze_root(inst):
    """The installed tree plus the host's own units (sysinit.target, network.target, slices), so that
    `systemd-analyze --root` resolves every dependency while ExecStart= paths point into the tree."""
    host_units = pathlib.Path("/usr/lib/systemd/system")
    target = inst["dest"] / "usr/lib/systemd/system"
    target.mkdir(parents=True, exist_ok=True)
    for src in host_units.iterdir():
        dst = target / src.name
        if dst.exists() or dst.is_symlink():
            continue  # with --prefix=/usr our own units live here: never replace them with the host's
        if src.is_dir() and not src.is_symlink():
            shutil.copytree(src, dst, symlinks=True)
        else:
            shutil.copy2(src, dst, follow_symlinks=False)
    return inst["dest"]


def systemd_analyze(*args, timeout=60):
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze is missing: install the systemd package (scripts/setup-deps.sh does)")
    # console: by default it logs to the journal when one exists and the test would see nothing
    env = dict(os.environ, SYSTEMD_LOG_TARGET="console", SYSTEMD_LOG_LEVEL="notice", SYSTEMD_COLORS="0")
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=timeout, env=env)


def test_every_installed_unit_passes_systemd_analyze_verify(installed):
    root = analyze_root(installed)
    unit_paths = ["/" + str((installed["unitdir"] / u).relative_to(root)) for u in UNITS]
    # the templates as files (verified as instance "i") and as concrete instances
    r = systemd_analyze("verify", "--man=no", "--generators=no", f"--root={root}", *unit_paths,
                        "beeworker-front@0.service", "beeworker-engine@3.service")
    out = (r.stdout + r.stderr).strip()
    assert r.returncode == 0 and not out, f"systemd-analyze verify (rc {r.returncode}):\n{out}"


def test_verify_catches_a_broken_unit(installed, tmp_path):
    """Guards the guard: the same invocation fails on an unknown key and a missing binary."""
    root = analyze_root(installed)
    broken = installed["unitdir"] / "beeworker-broken.service"
    text = (installed["unitdir"] / "beeworker-engine.service").read_text()
    broken.write_text(text.replace("ExecStart=" + str(installed["bindir"]) + "/beeworker-engine",
                                   "ExecStart=/nonexistent/beeworker-engine") + "\n[Service]\nNoSuchKey=1\n")
    try:
        r = systemd_analyze("verify", "--man=no", "--generators=no", f"--root={root}",
                            "/" + str(broken.relative_to(root)))
    finally:
        broken.unlink()
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "nonexistent" in out, out
    assert "NoSuchKey" in out, out


def parse_unit(path):
    """{section: [(key, value), ...]} keeping repeated keys in order, as systemd reads them."""
    sections, cur = {}, None
    for raw in pathlib.Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            cur = sections.setdefault(line.strip("[]"), [])
            continue
        k, _, v = line.partition("=")
        cur.append((k.strip(), v.strip()))
    return sections


def values(unit, section, key):
    return [v for k, v in unit.get(section, []) if k == key]


def test_restarting_the_engine_unit_cannot_stop_the_front(installed):
    for front, engine in [("beeworker-front.service", "beeworker-engine.service"),
                          ("beeworker-front@.service", "beeworker-engine@.service")]:
        f = parse_unit(installed["unitdir"] / front)
        e = parse_unit(installed["unitdir"] / engine)
        eng = engine.replace("@.", "@%i.")
        # directives through which a stop/restart of the engine propagates to the front
        for key in ("Requires", "Requisite", "BindsTo", "PartOf", "PropagatesStopTo", "StopPropagatedFrom",
                    "Upholds", "Conflicts", "OnSuccess", "OnFailure"):
            for v in values(f, "Unit", key):
                assert eng not in v.split() and "beeworker-engine" not in v, f"{front}: {key}={v}"
        for key in ("PropagatesStopTo", "PropagatesReloadTo", "ReloadPropagatedTo", "Conflicts"):
            for v in values(e, "Unit", key):
                assert "beeworker-front" not in v, f"{engine}: {key}={v}"
        assert eng in " ".join(values(f, "Unit", "Wants")), f"{front} should Want= its engine"
        assert any("beeworker-front" in v for v in values(e, "Unit", "After")), f"{engine} must start after the front"
        assert not any("beeworker-engine" in v for v in values(f, "Unit", "After"))
        assert values(e, "Service", "Restart") == ["always"] and values(f, "Service", "Restart") == ["on-failure"]
        assert values(e, "Unit", "StartLimitBurst") and values(e, "Unit", "StartLimitIntervalSec")
        for u in (f, e):
            assert values(u, "Service", "Type") == ["notify"] and values(u, "Service", "WatchdogSec")
            assert values(u, "Service", "RuntimeDirectoryPreserve") == ["yes"]


HARDENING = ["NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp", "CapabilityBoundingSet",
             "RestrictAddressFamilies", "SystemCallFilter", "DevicePolicy"]


def test_units_are_hardened_and_templates_match_their_plain_units(installed):
    d = installed["unitdir"]
    f, e = parse_unit(d / "beeworker-front.service"), parse_unit(d / "beeworker-engine.service")
    for u in (f, e):
        assert values(u, "Service", "NoNewPrivileges") == ["yes"]
        assert values(u, "Service", "ProtectSystem") == ["strict"]
        assert values(u, "Service", "ProtectHome") == ["yes"]
        assert values(u, "Service", "PrivateTmp") == ["yes"]
        assert values(u, "Service", "CapabilityBoundingSet") == [""]
        assert values(u, "Service", "SystemCallFilter")[0] == "@system-service"
        assert values(u, "Service", "DevicePolicy") == ["closed"]
        assert values(u, "Service", "User") == [SERVICE_USER]
    assert values(f, "Service", "MemoryDenyWriteExecute") == ["yes"]
    assert values(e, "Service", "RestrictAddressFamilies") == ["AF_UNIX"]
    allowed = values(e, "Service", "DeviceAllow") + values(parse_unit(d / "beeworker-engine@.service"), "Service",
                                                           "DeviceAllow")
    assert allowed and all(a.split()[0].startswith(("/dev/nvidia", "char-nvidia")) for a in allowed), allowed
    assert not values(f, "Service", "DeviceAllow")
    security = {"front": f, "engine": e}
    for name, plain in security.items():
        tmpl = parse_unit(d / f"beeworker-{name}@.service")
        skip = {"DeviceAllow", "Environment", "EnvironmentFile", "ExecStart", "RuntimeDirectory"}
        a = [(k, v) for k, v in plain["Service"] if k not in skip]
        b = [(k, v) for k, v in tmpl["Service"] if k not in skip]
        assert a == b, f"beeworker-{name}@.service drifted from its plain unit"
    for path in ("front", "engine"):
        r = systemd_analyze("security", "--offline=yes", f"--root={analyze_root(installed)}",
                            f"beeworker-{path}.service")
        m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", r.stdout + r.stderr)
        assert m, r.stdout + r.stderr
        assert float(m.group(1)) <= 2.0, f"beeworker-{path}.service exposure {m.group(1)}"


def host_root_copy(tmp):
    """A scratch root holding the host's user database, so sysusers allocates an id unused on this host."""
    (tmp / "etc").mkdir(parents=True, exist_ok=True)
    for name in ("passwd", "group", "shadow", "gshadow"):
        src = pathlib.Path("/etc") / name
        if src.exists() and os.access(src, os.R_OK):
            shutil.copy(src, tmp / "etc" / name)
    return tmp


def sysusers_allocate(inst, scratch):
    """Applies the installed sysusers entry to a scratch root; returns (uid, gid) of the user it made."""
    root = host_root_copy(scratch)
    conf = inst["dest"] / inst["prefix"].relative_to("/") / "lib/sysusers.d/beeworker.conf"
    r = subprocess.run(["systemd-sysusers", f"--root={root}", str(conf)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, f"systemd-sysusers: {r.stdout}{r.stderr}"
    for line in (root / "etc/passwd").read_text().splitlines():
        f = line.split(":")
        if f[0] == SERVICE_USER:
            return int(f[2]), int(f[3]), root
    pytest.fail(f"systemd-sysusers did not create {SERVICE_USER}")


def test_sysusers_and_tmpfiles_entries_apply(installed, tmp_path):
    if not shutil.which("systemd-sysusers") or not shutil.which("systemd-tmpfiles"):
        pytest.fail("systemd-sysusers/systemd-tmpfiles missing: install the systemd package")
    uid, gid, root = sysusers_allocate(installed, tmp_path / "root")
    assert 0 < uid < 1000, f"{SERVICE_USER} should be a system user, got uid {uid}"
    conf = installed["dest"] / installed["prefix"].relative_to("/") / "lib/tmpfiles.d/beeworker.conf"
    r = subprocess.run(["systemd-tmpfiles", f"--root={root}", "--create", str(conf)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and not r.stderr.strip(), f"systemd-tmpfiles: {r.stdout}{r.stderr}"
    run = root / "run/beeworker"
    st = run.stat()
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (uid, gid), "the runtime directory must belong to the service user"
    assert st.st_mode & 0o777 == 0o750
    assert (root / "var/lib/beeworker/models").is_dir()


# ---------------------------------------------------------------------------------------------------
# Starting the unit commands as systemd would
# ---------------------------------------------------------------------------------------------------

def expand_specifiers(s, spec):
    return re.sub(r"%(.)", lambda m: spec[m.group(1)] if m.group(1) in spec else pytest.fail(
        f"specifier %{m.group(1)} not emulated by the test"), s)


def read_env_file(path):
    env = {}
    for raw in pathlib.Path(path).read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        k, _, v = line.partition("=")
        v = v.strip()
        if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
            v = v[1:-1]
        env[k.strip()] = v
    return env


def expand_exec(line, env):
    """systemd's ExecStart= variable rules: `${VAR}` stays one word, a word that is exactly `$VAR` splits
    into as many words as the value holds (none when it is empty)."""
    out = []
    for w in shlex.split(line):
        m = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", w)
        if m:
            out += env.get(m.group(1), "").split()
        else:
            out.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda mm: env.get(mm.group(1), ""), w))
    return out


class ServiceUser:
    """Who the unit commands run as: the real beeworker user when it exists, else (as root) the uid that
    the installed sysusers entry allocates, else this user (said in the test output)."""

    def __init__(self, inst, scratch):
        self.name = SERVICE_USER
        try:
            pw = pwd.getpwnam(SERVICE_USER)
            self.uid, self.gid, self.how = pw.pw_uid, pw.pw_gid, "the beeworker user"
        except KeyError:
            if os.geteuid() == 0:
                self.uid, self.gid, _ = sysusers_allocate(inst, scratch)
                self.how = f"uid {self.uid} (what the sysusers entry allocates; not added to /etc/passwd)"
            else:
                self.uid, self.gid, self.how = os.getuid(), os.getgid(), "the test's own user (not root)"
        self.switch = os.geteuid() == 0 and self.uid != 0

    def preexec(self, umask):
        def run():
            os.umask(umask)
            if self.switch:
                os.setgroups([])
                os.setgid(self.gid)
                os.setuid(self.uid)
        return run


class UnitRunner:
    """Runs the ExecStart= of an installed unit the way systemd would (see the module docstring)."""

    def __init__(self, inst, scratch, user, overrides, notify_path=None, instance="0"):
        self.inst, self.user = inst, user
        self.run_root = scratch / "run"          # %t
        self.cache_root = scratch / "cache"      # %C
        self.logs = scratch / "logs"
        for d in (self.run_root, self.cache_root, self.logs):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        self.notify_path = notify_path
        self.instance = instance
        self.procs = {}
        # the operator's settings file at the path the unit names, from the installed example
        etc = in_dest(inst, inst["sysconfdir"]) / "beeworker"
        etc.mkdir(parents=True, exist_ok=True)
        example = in_dest(inst, inst["prefix"] / "share/doc/beeworker/beeworker.env.example").read_text()
        lines = [l for l in example.splitlines() if l.split("=", 1)[0].strip() not in overrides]
        (etc / "beeworker.env").write_text("\n".join(lines + [f"{k}={v}" for k, v in overrides.items()]) + "\n")
        (etc / "api-token").write_text(TOKEN + "\n")
        (etc / "api-token").chmod(0o600)

    def command(self, unit):
        u = parse_unit(self.inst["unitdir"] / unit)
        svc = dict(u["Service"])
        name = unit.replace("@.", f"@{self.instance}.")
        spec = {"t": str(self.run_root), "C": str(self.cache_root), "i": self.instance, "H": socket.gethostname(),
                "n": name, "d": str(self.run_root / "credentials" / name), "%": "%"}
        env = {}
        for v in values(u, "Service", "Environment"):
            for word in shlex.split(expand_specifiers(v, spec)):
                k, _, val = word.partition("=")
                env[k] = val
        for v in values(u, "Service", "EnvironmentFile"):
            path = in_dest(self.inst, expand_specifiers(v.lstrip("-"), spec))
            if path.exists():
                env.update(read_env_file(path))
            else:
                assert v.startswith("-"), f"{unit}: required EnvironmentFile {path} is missing"
        # RuntimeDirectory=, owned by User= with RuntimeDirectoryMode=
        for v in values(u, "Service", "RuntimeDirectory"):
            rd = self.run_root / expand_specifiers(v, spec)
            rd.mkdir(exist_ok=True)
            rd.chmod(int(svc.get("RuntimeDirectoryMode", "0755"), 8))
            if os.geteuid() == 0:
                os.chown(rd, self.user.uid, self.user.gid)
            env["RUNTIME_DIRECTORY"] = str(rd)
        for v in values(u, "Service", "CacheDirectory"):
            cd = self.cache_root / v
            cd.mkdir(exist_ok=True)
            if os.geteuid() == 0:
                os.chown(cd, self.user.uid, self.user.gid)
        # LoadCredential=NAME:PATH → %d/NAME, readable by the service only
        for v in values(u, "Service", "LoadCredential"):
            cname, _, src = v.partition(":")
            cdir = pathlib.Path(spec["d"])
            cdir.mkdir(parents=True, exist_ok=True)
            shutil.copy(in_dest(self.inst, src), cdir / cname)
            (cdir / cname).chmod(0o400)
            if os.geteuid() == 0:
                os.chown(cdir, self.user.uid, self.user.gid)
                os.chown(cdir / cname, self.user.uid, self.user.gid)
            cdir.chmod(0o500)
            env["CREDENTIALS_DIRECTORY"] = str(cdir)
        argv = expand_exec(expand_specifiers(svc["ExecStart"], spec), env)
        assert argv[0][0] == "/", f"{unit}: ExecStart= needs an absolute path (or has a prefix): {argv[0]}"
        argv[0] = str(in_dest(self.inst, argv[0]))
        proc_env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                    "USER": SERVICE_USER, "LOGNAME": SERVICE_USER, "HOME": "/", **env}
        if self.notify_path:
            proc_env["NOTIFY_SOCKET"] = str(self.notify_path)
        for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS"):
            if k in os.environ:
                proc_env[k] = os.environ[k]
        umask = int(svc.get("UMask", "0022"), 8)
        return argv, proc_env, umask

    def start(self, unit, extra_env=None):
        argv, env, umask = self.command(unit)
        env.update(extra_env or {})
        log = open(self.logs / f"{unit}-{len(self.procs)}.log", "wb")
        p = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, preexec_fn=self.user.preexec(umask),
                             cwd="/")
        log.close()
        p.log_path = self.logs / f"{unit}-{len(self.procs)}.log"
        self.procs[p.pid] = p
        return p

    def stop(self, p, deadline=STOP_DEADLINE_S):
        """systemd's stop: SIGTERM, then SIGKILL after TimeoutStopSec=; returns the exit status."""
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
        try:
            return p.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
            pytest.fail(f"pid {p.pid} ignored SIGTERM for {deadline}s; log: {log_tail(p)}")

    def close(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)


def log_tail(p):
    try:
        return p.log_path.read_text(errors="replace")[-3000:]
    except OSError:
        return ""


class NotifySocket:
    """The service manager's side of sd_notify: an AF_UNIX datagram socket that records every message with
    the sender's PID (SO_PASSCRED) and when it arrived."""

    def __init__(self, path):
        self.path = pathlib.Path(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.path.chmod(0o777)  # the service user must be able to send
        self.messages = []  # (monotonic time, pid, {field: value})

    def pump(self, timeout):
        self.sock.settimeout(timeout)
        try:
            data, anc, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        except socket.timeout:
            return None
        pid = None
        for level, kind, blob in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = array.array("i", blob[:4])[0]
        fields = dict(l.split("=", 1) for l in data.decode().splitlines() if "=" in l)
        msg = (time.monotonic(), pid, fields)
        self.messages.append(msg)
        return msg

    def wait_for(self, pid, field, value, timeout, on_message=None):
        deadline = time.monotonic() + timeout
        for m in self.messages:
            if m[1] == pid and m[2].get(field) == value:
                return m
        while time.monotonic() < deadline:
            m = self.pump(max(0.01, deadline - time.monotonic()))
            if m and on_message:
                on_message(m)
            if m and m[1] == pid and m[2].get(field) == value:
                return m
        return None

    def close(self):
        self.sock.close()
        self.path.unlink(missing_ok=True)


@pytest.fixture
def scratch():
    d = pathlib.Path(tempfile.mkdtemp(prefix="bwd-", dir="/tmp"))  # short: ipc paths must fit sockaddr_un
    d.chmod(0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def http(port, method, path, body=None, token=TOKEN, timeout=10):
    import http.client
    import json
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        h = {"Authorization": f"Bearer {token}"} if token else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            h["Content-Type"] = "application/json"
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw
    finally:
        c.close()


def stream_job(port, max_tokens, on_token=None, prompt="Once upon a time"):
    st, resp = http(port, "POST", "/v1/inference", {"prompt": prompt, "max_tokens": max_tokens, "temperature": 0})
    assert st == 200, (st, resp)
    s = SseStream(port, resp["sse_url"], {"Authorization": f"Bearer {TOKEN}"}, 60)
    events = []
    try:
        assert s.status == 200
        for ev in s.events():
            events.append(ev)
            if on_token and isinstance(ev["data"], dict) and ev["data"].get("type") == "token":
                on_token(ev)
    finally:
        s.close()
    assert events and events[-1]["data"] == "[DONE]", events[-3:]
    terminal = [e["data"] for e in events if isinstance(e["data"], dict) and e["data"]["type"] in ("end", "error")]
    assert terminal, events[-3:]
    tokens = [e for e in events if isinstance(e["data"], dict) and e["data"]["type"] == "token"]
    return tokens, terminal[-1]


def settings(model_path, port):
    return {"BEEWORKER_MODEL": str(model_path), "BEEWORKER_BACKEND": "cpu", "BEEWORKER_PORT": str(port),
            "BEEWORKER_ENGINE_OPTS": "--slots 2 --threads 2", "BEEWORKER_FRONT_OPTS": "--bind 127.0.0.1"}


def engine_ready(port, epoch=None):
    st, body = http(port, "GET", "/info")
    return st == 200 and body["engine"]["state"] == "ready" and (epoch is None or body["engine"]["epoch"] != epoch)


# ---------------------------------------------------------------------------------------------------
# 2. The unit commands: start, stream, restart the engine, stream, stop
# ---------------------------------------------------------------------------------------------------

def test_unit_commands_survive_an_engine_restart_and_leave_nothing_behind(installed, model_path, scratch):
    user = ServiceUser(installed, scratch / "users")
    print(f"running the unit commands as {user.how}")
    port = free_port()
    notify = NotifySocket(scratch / "notify")
    runner = UnitRunner(installed, scratch, user, settings(model_path, port), notify_path=notify.path)
    rundir = runner.run_root / "beeworker"
    try:
        front = runner.start("beeworker-front.service")
        assert notify.wait_for(front.pid, "READY", "1", 30), f"front sent no READY=1; log: {log_tail(front)}"
        engine = runner.start("beeworker-engine.service")
        assert notify.wait_for(engine.pid, "READY", "1", 60), f"engine sent no READY=1; log: {log_tail(engine)}"
        assert wait_until(lambda: engine_ready(port), 30, 0.05), log_tail(front)
        if user.switch:
            for name in ("jobs.ipc", "tokens.ipc"):
                assert (rundir / name).stat().st_uid == user.uid
            assert pathlib.Path(f"/proc/{engine.pid}/status").read_text().count(f"\t{user.uid}\t") >= 1

        tokens, end = stream_job(port, 12)
        assert end["type"] == "end" and len(tokens) == 12, end
        epoch = http(port, "GET", "/info")[1]["engine"]["epoch"]

        # `systemctl restart beeworker-engine` while a client streams: the front and the client's
        # connection stay up, the stream ends with a terminal event (resumed or an explicit error)
        restarted = {}

        def restart_once(ev):
            if not restarted and ev["data"]["i"] >= 2:
                restarted["status"] = runner.stop(engine)
                restarted["engine"] = runner.start("beeworker-engine.service")

        _, end = stream_job(port, 200, on_token=restart_once)
        assert restarted, "the stream ended before the restart"
        assert restarted["status"] == 0, f"the engine exited with {restarted['status']} on SIGTERM"
        engine = restarted["engine"]
        assert front.poll() is None, "the front died when the engine restarted"
        assert notify.wait_for(engine.pid, "READY", "1", 60), log_tail(engine)
        assert wait_until(lambda: engine_ready(port, epoch), 30, 0.05), log_tail(front)

        tokens, end = stream_job(port, 12)
        assert end["type"] == "end" and len(tokens) == 12, end

        # `systemctl stop beeworker.target`: the engine first (it is ordered After= the front), then the front
        assert runner.stop(engine) == 0
        assert runner.stop(front) == 0, log_tail(front)
        assert not any(pid_alive(p) for p in runner.procs), "a unit process survived its stop"
        assert not port_listening(port)
        left = sorted(p.name for p in rundir.iterdir())
        assert left == [], f"left in the runtime directory: {left}"
        assert rundir.is_dir(), "RuntimeDirectoryPreserve=yes: the directory itself stays"
    finally:
        runner.close()
        notify.close()


# ---------------------------------------------------------------------------------------------------
# 4. READY only after the model is loaded / once the front listens; watchdog pings
# ---------------------------------------------------------------------------------------------------

def test_ready_is_sent_only_after_the_model_is_loaded_and_the_port_is_open(installed, model_path, scratch):
    user = ServiceUser(installed, scratch / "users")
    port = free_port()
    notify = NotifySocket(scratch / "notify")
    runner = UnitRunner(installed, scratch, user, settings(model_path, port), notify_path=notify.path)
    wd = {"WATCHDOG_USEC": "1000000"}
    try:
        front = runner.start("beeworker-front.service", wd)
        listening_at_ready = []
        m = notify.wait_for(front.pid, "READY", "1", 30,
                            on_message=lambda m: m[1] == front.pid and "READY" in m[2] and
                            listening_at_ready.append(port_listening(port)))
        assert m, f"front: no READY=1; log: {log_tail(front)}"
        assert port_listening(port), "the front said READY=1 before its port accepted connections"
        assert all(listening_at_ready)

        # the engine: READY=1 must not come before its 'model loaded' log line; no HELLO ready either
        engine = runner.start("beeworker-engine.service", wd)
        seen = []

        def check(m):
            if m[1] == engine.pid and m[2].get("READY") == "1":
                seen.append("model loaded" in engine.log_path.read_text(errors="replace"))

        assert notify.wait_for(engine.pid, "READY", "1", 60, on_message=check), log_tail(engine)
        assert seen and all(seen), f"engine READY=1 came before its model was loaded; log: {log_tail(engine)}"
        assert wait_until(lambda: engine_ready(port), 30, 0.05)

        # watchdog pings from both loops, well inside WATCHDOG_USEC
        t0 = time.monotonic()
        while time.monotonic() - t0 < 2.5:
            notify.pump(0.1)
        for p in (front, engine):
            pings = [t for t, pid, f in notify.messages if pid == p.pid and f.get("WATCHDOG") == "1" and t >= t0]
            assert len(pings) >= 4, f"pid {p.pid}: {len(pings)} watchdog pings in 2.5 s"
            gaps = [b - a for a, b in zip(pings, pings[1:])]
            assert max(gaps) < 0.9, f"pid {p.pid}: watchdog gap {max(gaps):.2f}s (interval 1 s)"

        # STOPPING=1 at SIGTERM, from each process itself
        assert runner.stop(engine) == 0
        assert runner.stop(front) == 0
        while notify.pump(0.2):
            pass
        for p in (front, engine):
            assert any(pid == p.pid and f.get("STOPPING") == "1" for _, pid, f in notify.messages)
    finally:
        runner.close()
        notify.close()


def test_an_engine_that_cannot_load_its_model_never_says_ready(installed, scratch):
    bad = scratch / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    bad.chmod(0o644)
    user = ServiceUser(installed, scratch / "users")
    notify = NotifySocket(scratch / "notify")
    runner = UnitRunner(installed, scratch, user, settings(bad, free_port()), notify_path=notify.path)
    try:
        engine = runner.start("beeworker-engine.service")
        engine.wait(timeout=30)
        assert engine.returncode != 0
        while notify.pump(0.2):
            pass
        assert not any(pid == engine.pid and f.get("READY") == "1" for _, pid, f in notify.messages), notify.messages
    finally:
        runner.close()
        notify.close()


def test_a_spawned_engine_never_speaks_for_the_fronts_unit(build_dir, model_path, scratch):
    notify = NotifySocket(scratch / "notify")
    os.environ["NOTIFY_SOCKET"] = str(notify.path)
    try:
        w = Worker(build_dir, model_path, slots=2, log_dir=scratch / "logs")
    finally:
        del os.environ["NOTIFY_SOCKET"]
    try:
        w.wait_ready()
        engine_pid = w.info()["engine"]["pid"]
        assert notify.wait_for(w.front_pid, "READY", "1", 10)
        t0 = time.monotonic()
        while time.monotonic() - t0 < 1.0:
            notify.pump(0.1)
        senders = {pid for _, pid, _ in notify.messages}
        assert senders == {w.front_pid}, f"notifications from {senders}; engine pid {engine_pid}"
    finally:
        w.close()
        notify.close()


# ---------------------------------------------------------------------------------------------------
# --spawn-engine gives up on a crash loop
# ---------------------------------------------------------------------------------------------------

def test_spawn_engine_gives_up_after_max_crashes_and_health_says_down(build_dir, scratch):
    bad = scratch / "bad.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 64)
    with Worker(build_dir, bad, slots=2, extra=["--engine-max-crashes", "3", "--engine-crash-window", "60"],
                log_dir=scratch / "logs") as w:
        def down():
            st, body, _ = w.request("GET", "/health")
            return st == 503 and body.get("engine") == "down"
        assert wait_until(down, 20, 0.1), w.log_text()
        st, body, _ = w.request("GET", "/health")
        assert body["status"] == "unhealthy"
        log = w.log_text()
        assert "giving up" in log and log.count("started engine pid") == 3, log
        time.sleep(0.5)  # no restart is pending any more
        assert w.log_text().count("started engine pid") == 3
        assert w.proc.poll() is None, "the front must stay up after giving up"


def test_spawn_engine_flags_are_validated(build_dir):
    front = build_dir / "frontend" / "beeworker-front"
    r = subprocess.run([str(front), "--local-mode", "--engine-max-crashes", "x"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode != 0 and "--engine-max-crashes" in r.stderr and len(r.stderr.splitlines()) == 1
    r = subprocess.run([str(front), "--help"], capture_output=True, text=True, timeout=10)
    assert "--engine-crash-window" in r.stdout


# ---------------------------------------------------------------------------------------------------
# 3. The real thing, when systemd runs this machine
# ---------------------------------------------------------------------------------------------------

def systemd_is_pid1():
    try:
        return os.path.basename(os.readlink("/proc/1/exe")) == "systemd" and pathlib.Path("/run/systemd/system").is_dir()
    except OSError:
        return False


def systemctl(*args, timeout=120):
    return subprocess.run(["systemctl", *args], capture_output=True, text=True, timeout=timeout)


def test_real_units_restart_the_engine_during_a_stream(installed, model_path):
    if not systemd_is_pid1():
        pytest.skip("systemd is not PID 1 here (a container without an init): the unit commands are "
                    "exercised by test_unit_commands_survive_an_engine_restart_and_leave_nothing_behind")
    if os.geteuid() != 0:
        pytest.skip("starting system units needs root")
    instance = "9"  # the @ units, so an installed beeworker-front.service is left alone
    front_u, engine_u = f"beeworker-front@{instance}.service", f"beeworker-engine@{instance}.service"
    if systemctl("is-active", "--quiet", front_u).returncode == 0 or \
            systemctl("is-active", "--quiet", engine_u).returncode == 0:
        pytest.skip(f"{front_u} or {engine_u} already runs on this host")
    port = free_port()
    # units in /run/systemd/system (gone at reboot) pointing at the scratch install
    rundir_units = pathlib.Path("/run/systemd/system")
    written = []
    etc = in_dest(installed, installed["sysconfdir"]) / "beeworker"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / f"beeworker@{instance}.env").write_text(
        "".join(f"{k}={v}\n" for k, v in settings(model_path, port).items()))
    (etc / "api-token").write_text(TOKEN + "\n")
    (etc / "api-token").chmod(0o600)
    subprocess.run(["systemd-sysusers", str(in_dest(installed, installed["prefix"] / "lib/sysusers.d/beeworker.conf"))],
                   check=True, timeout=60)
    try:
        for u in ("beeworker-front@.service", "beeworker-engine@.service", "beeworker.target"):
            text = (installed["unitdir"] / u).read_text()
            text = text.replace(str(installed["bindir"]) + "/", str(in_dest(installed, installed["bindir"])) + "/")
            text = text.replace(str(installed["sysconfdir"]) + "/", str(in_dest(installed, installed["sysconfdir"])) + "/")
            # the scratch tree lives under /tmp, which ProtectSystem/PrivateTmp hide: expose it read-only
            text = text.replace("[Service]\n", f"[Service]\nBindReadOnlyPaths={installed['dest']}\n"
                                               f"BindReadOnlyPaths={model_path.parent}\n", 1)
            (rundir_units / u).write_text(text)
            written.append(rundir_units / u)
        assert systemctl("daemon-reload").returncode == 0
        r = systemctl("start", front_u)
        assert r.returncode == 0, r.stderr + systemctl("status", front_u, engine_u).stdout
        assert wait_until(lambda: systemctl("is-active", "--quiet", engine_u).returncode == 0, 120, 0.2)
        assert wait_until(lambda: engine_ready(port), 60, 0.1)
        front_pid = systemctl("show", "-P", "MainPID", front_u).stdout.strip()
        restarted = {}

        def restart_once(ev):
            if not restarted and ev["data"]["i"] >= 2:
                restarted["rc"] = systemctl("restart", engine_u).returncode

        _, end = stream_job(port, 200, on_token=restart_once)
        assert restarted.get("rc") == 0
        assert systemctl("show", "-P", "MainPID", front_u).stdout.strip() == front_pid, "the front restarted"
        assert systemctl("is-active", "--quiet", front_u).returncode == 0
        assert wait_until(lambda: engine_ready(port), 60, 0.1)
        tokens, end = stream_job(port, 12)
        assert end["type"] == "end" and len(tokens) == 12
    finally:
        systemctl("stop", engine_u, front_u)
        for p in written:
            p.unlink(missing_ok=True)
        systemctl("daemon-reload")
        systemctl("reset-failed", engine_u, front_u)
