"""Real processes for the wire tests: a `nats-server -js` on a free loopback port and a
`koan-demo --nats` joined to it. Every wait is for a condition, with a bound, and says
what it waited for when it gives up."""

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

PATIENCE = 30.0  # seconds: the bound of every wait


class Timeout(AssertionError):
    pass


def wait_until(what, check, patience=PATIENCE):
    """Polls `check` until it returns something truthy, at most `patience` seconds."""
    deadline = time.monotonic() + patience
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise Timeout(f"gave up after {patience}s waiting for {what}")
        time.sleep(0.02)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def repo_root():
    return Path(__file__).resolve().parents[4]


def demo_binary():
    """`$KOAN_DEMO`, else the debug build in `$CARGO_TARGET_DIR` or `target/`; absolute,
    since the demo runs in a directory of its own."""
    if os.environ.get("KOAN_DEMO"):
        return Path(os.environ["KOAN_DEMO"]).resolve()
    target = Path(os.environ.get("CARGO_TARGET_DIR") or repo_root() / "target")
    return (target / "debug" / "koan-demo").resolve()


def nats_server_binary():
    return os.environ.get("NATS_SERVER") or shutil.which("nats-server") or "/usr/sbin/nats-server"


class Cluster:
    """A NATS server and one demo process in a temporary directory; `close()` stops both."""

    def __init__(self):
        self.dir = Path(tempfile.mkdtemp(prefix="koan-wire-py-"))
        self.procs = []
        self.logs = {}
        try:
            self.url = self._start_nats()
            self.db = self.dir / "demo.db"
            self.http = self._start_demo()
        except BaseException:
            self.close()
            raise

    def _spawn(self, name, args, stdout=None, **kw):
        log = open(self.dir / f"{name}.log", "ab")
        self.logs[name] = self.dir / f"{name}.log"
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=stdout or log, stderr=log, **kw
        )
        self.procs.append(proc)
        return proc, log

    def log(self, name):
        try:
            return self.logs[name].read_text(errors="replace")
        except (KeyError, OSError):
            return ""

    def _start_nats(self):
        for _ in range(5):
            port = free_port()
            proc, _ = self._spawn(
                f"nats-{port}",
                [nats_server_binary(), "-js", "-a", "127.0.0.1", "-p", str(port),
                 "-sd", str(self.dir / "store")],
            )
            name = f"nats-{port}"

            def ready():
                log = self.log(name)
                if "address already in use" in log or proc.poll() is not None:
                    return "gone"
                if "Server is ready" not in log:
                    return None
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    return "ready"
                except OSError:
                    return None

            state = wait_until(f"nats-server on port {port} to be ready", ready, 15)
            if state == "ready":
                return f"nats://127.0.0.1:{port}"
            proc.kill()
            proc.wait()
            if "address already in use" not in self.log(name):
                raise RuntimeError(f"nats-server did not start:\n{self.log(name)}")
        raise RuntimeError("no free port for nats-server after 5 attempts")

    def _start_demo(self):
        binary = demo_binary()
        if not binary.is_file():
            raise RuntimeError(f"{binary} is missing: build it with `cargo build -p koan-demo`")
        env = {k: v for k, v in os.environ.items() if k != "KOAN_CONFIG"}
        env["RUST_LOG"] = "info"
        proc, log = self._spawn(
            "demo",
            [str(binary), "--http", "127.0.0.1:0", "--nats", self.url, "--db", str(self.db)],
            stdout=subprocess.PIPE,
            cwd=self.dir,  # no koan.toml or appsettings.json of the developer's
            env=env,
        )
        found = threading.Event()
        where = []

        def drain():
            for line in proc.stdout:
                text = line.decode(errors="replace")
                if text.startswith("listening on ") and not found.is_set():
                    where.append(text[len("listening on "):].strip())
                    found.set()
                log.write(line)
                log.flush()
            found.set()

        threading.Thread(target=drain, daemon=True).start()
        if not found.wait(PATIENCE) or not where:
            raise RuntimeError(f"koan-demo never said where it listens; its log:\n{self.log('demo')}")
        return where[0]

    def close(self):
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(PATIENCE)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
