#!/usr/bin/python3
"""Executor benchmark driver (bench/executor/run.sh): cold starts with and
without the warm pool, warm execution overhead (executor API vs the runtime
directly), and a burst of 50 concurrent cold starts.

Standard library only. Every figure is printed next to its baseline from the
same run; raw samples go to OUT/*.json, the markdown table to OUT/results.md.
"""

import argparse
import concurrent.futures
import glob
import http.client
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time

SECRET = "s"
IMAGES = {"node": "openruntimes/node:v5-22", "python": "openruntimes/python:v5-3.12"}
ENTRYPOINTS = {"node": "index.js", "python": "main.py"}
BUILD_COMMAND = 'tar -zxf /tmp/code.tar.gz -C /mnt/code && bash helpers/build.sh ""'
RUNTIME_ENTRYPOINT = ('cp /tmp/code.tar.gz /mnt/code/code.tar.gz && '
                      'nohup helpers/start.sh "bash helpers/server.sh"')
FUNCTIONS = {
    "node": ("index.js", "module.exports = async (context) => context.res.text('Hello, World!');\n"),
    "python": ("main.py", "async def main(context):\n    return context.res.text(\"Hello, World!\")\n"),
}
# The sync form of the Open Runtimes Python starter (the 'sync' what-if).
PYTHON_SYNC = "def main(context):\n    return context.res.text(\"Hello, World!\")\n"
CLEAN_ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, file=sys.stderr, flush=True)


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def pct(xs, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(p / 100.0 * len(s) + 0.5)) - 1))
    return s[k]


def listening_ports():
    """Local TCP ports in LISTEN state (IPv4 and IPv6), from /proc/net."""
    ports = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as f:
                next(f)
                for line in f:
                    parts = line.split()
                    if parts[3] == "0A":
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except OSError:
            pass
    return ports


# ---- the executor process ---------------------------------------------------

def patched_cache(binary, root, name, patches):
    """An XDG cache for `opr` whose runtime files (written by `opr` on first
    start, src/cli/runtime_files.rs) carry `patches`: [(relative path, old,
    new)]. Used only for the what-if package, never for the executors that
    are measured."""
    ex = Executor(binary, name, root)
    ex.stop()
    for rel, old, new in patches:
        [path] = glob.glob(os.path.join(ex.cache, "opr", "runtimes", "*", rel))
        with open(path) as f:
            text = f.read()
        if old not in text:
            raise SystemExit(f"patch target not found in {path}: {old!r}")
        with open(path, "w") as f:
            f.write(text.replace(old, new))
    return ex.cache


class Executor:
    def __init__(self, binary, name, root, pool=None, extra_env=None, cache=None):
        self.name = name
        self.hostname = "bench-" + name
        self.work = os.path.join(root, name, "work")
        self.cache = cache or os.path.join(root, name, "cache")
        os.makedirs(self.work, exist_ok=True)
        os.makedirs(self.cache, exist_ok=True)
        self.pool = pool or {}
        env = dict(CLEAN_ENV)
        env.update({
            "HOME": os.path.join(root, name),
            "OPR_EXECUTOR_SECRET": SECRET,
            "OPR_EXECUTOR_HOSTNAME": self.hostname,
            "OPR_EXECUTOR_WORK_DIR": self.work,
            "XDG_CACHE_HOME": self.cache,
        })
        if self.pool:
            env["OPR_EXECUTOR_WARM_POOL"] = ",".join(
                f"{IMAGES[lang]}={n}" for lang, n in self.pool.items())
        env.update(extra_env or {})
        self.stderr_path = os.path.join(root, name, "executor.log")
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen([binary, "executor", "--listen", "127.0.0.1:0"],
                                     env=env, stdout=subprocess.PIPE, stderr=self.stderr)
        line = self.proc.stdout.readline().decode()
        m = re.search(r"http://([0-9.]+):(\d+)", line)
        if not m:
            raise SystemExit(f"executor {name} did not start: {line!r} (see {self.stderr_path})")
        self.host, self.port = m.group(1), int(m.group(2))
        log(f"executor {name} on {self.host}:{self.port} pool={self.pool or 'none'}")

    def conn(self):
        c = http.client.HTTPConnection(self.host, self.port, timeout=300)
        c.connect()
        return c

    def call(self, method, path, body=None, conn=None, accept_json=True):
        """(status, parsed JSON or bytes, seconds); one request on `conn`
        (a new connection when None)."""
        own = conn is None
        c = conn or self.conn()
        headers = {"Authorization": f"Bearer {SECRET}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if accept_json:
            headers["Accept"] = "application/json"
        t0 = time.perf_counter()
        c.request(method, path, body=data, headers=headers)
        r = c.getresponse()
        raw = r.read()
        dt = time.perf_counter() - t0
        if own:
            c.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return r.status, parsed, dt

    def build(self, lang, source, dest):
        st, body, dt = self.call("POST", "/v1/runtimes", {
            "runtimeId": f"build-{lang}", "image": IMAGES[lang], "source": source,
            "destination": dest, "entrypoint": ENTRYPOINTS[lang], "command": BUILD_COMMAND,
            "remove": True, "timeout": 120})
        if st != 201:
            raise SystemExit(f"build {lang} failed: {st} {body}")
        log(f"built {lang} package in {dt:.2f}s: {body['path']}")
        return body["path"]

    def exec_body(self, lang, package):
        return {"image": IMAGES[lang], "source": package, "entrypoint": ENTRYPOINTS[lang],
                "runtimeEntrypoint": RUNTIME_ENTRYPOINT, "path": "/", "timeout": 30}

    def record(self, runtime_id):
        """The process backend's record of a runtime (port, pid), or None."""
        p = os.path.join(self.work, ".process", f"{self.hostname}-{runtime_id}", "runtime.json")
        try:
            with open(p) as f:
                return json.load(f)
        except OSError:
            return None

    def pool_ready(self):
        """Standby runtimes listening, per language: a pooled runtime binds
        its port only once its worker is up (crates/runtime/src/server.rs
        `start`), so a listening port means ready."""
        ports = listening_ports()
        ready = {}
        for p in glob.glob(os.path.join(self.work, ".process", f"{self.hostname}-pool-*",
                                        "runtime.json")):
            try:
                with open(p) as f:
                    rec = json.load(f)
            except (OSError, ValueError):
                continue
            if rec.get("port") in ports:
                lang = rec.get("language", "")
                ready[lang] = ready.get(lang, 0) + 1
        return ready

    def wait_pool(self, want=None, timeout=120.0, settle=0.3):
        """Waits until the pool holds `want` ready runtimes per language
        (default: its configured size) with no runtime assigned from it,
        then `settle` s more so the refill's CPU tail is over."""
        want = want if want is not None else self.pool
        if not want:
            time.sleep(settle)
            return 0.0
        t0 = time.perf_counter()
        while True:
            ready = self.pool_ready()
            if all(ready.get(lang, 0) >= n for lang, n in want.items()):
                break
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"pool of {self.name} not refilled after {timeout}s: {ready}")
            time.sleep(0.02)
        waited = time.perf_counter() - t0
        time.sleep(settle)
        return waited

    def delete(self, runtime_id, conn=None):
        st, body, _ = self.call("DELETE", f"/v1/runtimes/{runtime_id}", conn=conn)
        if st not in (200, 404):
            log(f"delete {runtime_id}: {st} {body}")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        log(f"executor {self.name} stopped")


# ---- phases -----------------------------------------------------------------

def hyperfine(cmd, out_json):
    subprocess.run(["hyperfine", "-N", "--warmup", "3", "--runs", "30", "--export-json",
                    out_json, "--style", "none", cmd], env=CLEAN_ENV, check=True,
                   stdout=subprocess.DEVNULL)
    with open(out_json) as f:
        times = json.load(f)["results"][0]["times"]
    return [t * 1000 for t in times]


def cold_phase(pool_ex, plain_ex, variants, samples):
    """Interleaved cold starts: per round, one sample of every case (order
    rotated). Every sample waits until the pool is full again (and 0.3 s);
    every runtime is deleted right after its sample. `variants`: name ->
    (language, package)."""
    kinds = [(v, ex) for v in variants for ex in (pool_ex, plain_ex)]
    conns = {ex.name: ex.conn() for ex in (pool_ex, plain_ex)}
    results = {f"{v}-{ex.name}": [] for v, ex in kinds}
    for i in range(samples):
        order = kinds[i % len(kinds):] + kinds[:i % len(kinds)]
        for v, ex in order:
            lang, package = variants[v]
            key = f"{v}-{ex.name}"
            # Every sample (with or without pool) waits for the pool's
            # background refill, so no sample shares the CPU with it.
            pool_ex.wait_pool()
            rid = f"cold-{v}-{i}"
            st, body, dt = ex.call("POST", f"/v1/runtimes/{rid}/executions",
                                   ex.exec_body(lang, package), conn=conns[ex.name])
            ok = st == 200 and isinstance(body, dict) and body.get("body") == "Hello, World!"
            # A pool hit leaves no record under the function's own name.
            hit = ex.record(rid) is None
            # The helpers' own phase timings (extract, startup), no-pool only.
            timings = {}
            tf = os.path.join(ex.work, ".process", f"{ex.hostname}-{rid}", "telemetry",
                              "timings.txt")
            if os.path.exists(tf):
                with open(tf) as f:
                    for line in f:
                        k, _, val = line.strip().partition("=")
                        try:
                            timings[k] = float(val) * 1000
                        except ValueError:
                            pass
            results[key].append({"ms": dt * 1000, "ok": ok, "status": st, "hit": hit,
                                 "server_duration_ms": (body.get("duration", 0) * 1000
                                                        if isinstance(body, dict) else None),
                                 "timings_ms": timings})
            if not ok:
                log(f"cold {key} #{i}: {st} {str(body)[:300]}")
            ex.delete(rid, conn=conns[ex.name])
        log(f"cold round {i + 1}/{samples} load {loadavg()}")
    for c in conns.values():
        c.close()
    return results


def runtime_port(ex, runtime_id):
    """The runtime's port from its record, cross-checked with `ss -ltnp`:
    the opr-runtime listening there must descend from the executor."""
    rec = ex.record(runtime_id)
    port = rec["port"]
    ss = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    found = None
    for line in ss.splitlines():
        m = re.search(r"127\.0\.0\.1:(\d+)\s.*\"opr-runtime\",pid=(\d+)", line)
        if m and int(m.group(1)) == port:
            pid = int(m.group(2))
            while pid > 1:
                if pid == ex.proc.pid:
                    found = port
                    break
                with open(f"/proc/{pid}/stat") as f:
                    pid = int(f.read().rsplit(")", 1)[1].split()[1])
    if found is None:
        raise SystemExit(f"ss -ltnp shows no opr-runtime of {ex.name} on port {port}")
    return port


def timed_loop(conn, n, method, path, body, headers, expect):
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        out.append(time.perf_counter() - t0)
        if r.status != 200 or expect not in data:
            raise SystemExit(f"warm request failed: {r.status} {data[:300]!r}")
    return out


def warm_phase(ex, packages, langs, blocks, block_size, wrk_runs, wrk_secs, out_dir):
    """One warm runtime per language, called through the executor and
    directly, in alternating blocks on one keep-alive connection each."""
    here = os.path.dirname(os.path.abspath(__file__))
    res = {}
    for lang in langs:
        rid = f"warm-{lang}"
        body = ex.exec_body(lang, packages[lang])
        st, first, _ = ex.call("POST", f"/v1/runtimes/{rid}/executions", body)
        assert st == 200, first
        st, view, _ = ex.call("GET", f"/v1/runtimes/{rid}")
        key, hostname = view["key"], view["hostname"]
        port = runtime_port(ex, rid)
        log(f"warm {lang}: runtime port {port}")
        # Exactly what the executor sends the runtime (execute.rs build_request).
        direct_headers = {
            "x-open-runtimes-secret": key, "x-open-runtimes-logging": "enabled",
            "x-open-runtimes-timeout": "30", "Host": f"{hostname}:3000", "Accept": "*/*",
            "Authorization": "Basic " + __import__("base64").b64encode(f"opr:{key}".encode()).decode(),
        }
        api_body = json.dumps(body).encode()
        api_headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json",
                       "Accept": "application/json"}
        api = http.client.HTTPConnection(ex.host, ex.port, timeout=60)
        direct = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        api.connect()
        direct.connect()
        path = f"/v1/runtimes/{rid}/executions"
        # Warm-up: JIT, connection pools, page cache.
        timed_loop(api, 200, "POST", path, api_body, api_headers, b"Hello, World!")
        timed_loop(direct, 200, "GET", "/", None, direct_headers, b"Hello, World!")
        # Four series in rotating order per block: executor and direct, with
        # logging on (the default) and off (`logging: false` in the body,
        # `x-open-runtimes-logging: disabled` directly).
        nolog_body = json.dumps(dict(body, logging=False)).encode()
        nolog_headers = dict(direct_headers, **{"x-open-runtimes-logging": "disabled"})
        series = {
            "api_us": (api, "POST", path, api_body, api_headers),
            "direct_us": (direct, "GET", "/", None, direct_headers),
            "api_nolog_us": (api, "POST", path, nolog_body, api_headers),
            "direct_nolog_us": (direct, "GET", "/", None, nolog_headers),
        }
        names = list(series)
        for n in names:
            timed_loop(*series[n][:1], 50, *series[n][1:], b"Hello, World!")
        got = {n: [] for n in names}
        for blk in range(blocks):
            for n in names[blk % 4:] + names[:blk % 4]:
                got[n] += [x * 1e6 for x in
                           timed_loop(*series[n][:1], block_size, *series[n][1:], b"Hello, World!")]
        api.close()
        direct.close()
        res[lang] = {"python": got}
        # The same with wrk (-t1 -c1, keep-alive), alternating.
        if wrk_runs and shutil.which("wrk"):
            res[lang]["wrk"] = wrk_compare(ex, rid, api_body, key, hostname, port, wrk_runs,
                                          wrk_secs, out_dir, lang, here)
        ex.delete(rid)
    return res


WRK_LUA = """
wrk.method = "{method}"
{body}
{headers}
done = function(summary, latency, requests)
  io.stderr:write(string.format("RESULT %d %d %.1f %.1f %.1f %.1f\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.mean))
end
"""


def wrk_script(path, method, body, headers):
    lines = "\n".join(f'wrk.headers["{k}"] = "{v}"' for k, v in headers.items())
    b = f"wrk.body = {json.dumps(body.decode())}" if body else ""
    with open(path, "w") as f:
        f.write(WRK_LUA.format(method=method, body=b, headers=lines))


def run_wrk(url, script, secs):
    p = subprocess.run(["wrk", "-t1", "-c1", f"-d{secs}s", "-s", script, url],
                       capture_output=True, text=True, env=CLEAN_ENV)
    m = re.search(r"RESULT (\d+) (\d+) ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+)", p.stderr)
    if not m:
        raise SystemExit(f"wrk failed: {p.stdout} {p.stderr}")
    n, err, p50, p90, p99, mean = m.groups()
    # wrk counts non-2xx/3xx as status errors.
    return {"requests": int(n), "errors": int(err), "p50_us": float(p50),
            "p90_us": float(p90), "p99_us": float(p99), "mean_us": float(mean)}


def wrk_compare(ex, rid, api_body, key, hostname, port, runs, secs, out_dir, lang, here):
    api_lua = os.path.join(out_dir, f"wrk-api-{lang}.lua")
    direct_lua = os.path.join(out_dir, f"wrk-direct-{lang}.lua")
    wrk_script(api_lua, "POST", api_body, {"Authorization": f"Bearer {SECRET}",
                                           "Content-Type": "application/json",
                                           "Accept": "application/json"})
    wrk_script(direct_lua, "GET", None, {
        "x-open-runtimes-secret": key, "x-open-runtimes-logging": "enabled",
        "x-open-runtimes-timeout": "30", "Host": f"{hostname}:3000",
        "Authorization": "Basic " + __import__("base64").b64encode(f"opr:{key}".encode()).decode()})
    api_url = f"http://{ex.host}:{ex.port}/v1/runtimes/{rid}/executions"
    direct_url = f"http://127.0.0.1:{port}/"
    run_wrk(api_url, api_lua, 1)
    run_wrk(direct_url, direct_lua, 1)
    out = {"api": [], "direct": []}
    for i in range(runs):
        pair = [("api", api_url, api_lua), ("direct", direct_url, direct_lua)]
        if i % 2:
            pair.reverse()
        for name, url, lua in pair:
            out[name].append(run_wrk(url, lua, secs))
    return out


def burst_phase(ex, tag, lang, package, n):
    """n threads, one connection each, released together; each cold-starts
    its own runtime id with the same package."""
    barrier = threading.Barrier(n + 1)
    results = [None] * n
    body = ex.exec_body(lang, package)

    def worker(i):
        c = ex.conn()
        barrier.wait()
        t0 = time.perf_counter()
        try:
            st, b, dt = ex.call("POST", f"/v1/runtimes/burst-{tag}-{i}/executions", body, conn=c)
            ok = st == 200 and isinstance(b, dict) and b.get("body") == "Hello, World!"
            results[i] = {"ms": dt * 1000, "ok": ok, "status": st, "end": time.perf_counter(),
                          "error": None if ok else str(b)[:300]}
        except Exception as e:  # noqa: BLE001 - a failed request is a result
            results[i] = {"ms": (time.perf_counter() - t0) * 1000, "ok": False, "status": 0,
                          "end": time.perf_counter(), "error": repr(e)}
        c.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = max(r["end"] for r in results) - t0
    hits = sum(1 for i in range(n) if ex.record(f"burst-{tag}-{i}") is None)
    # Clean up in parallel.
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: ex.delete(f"burst-{tag}-{i}"), range(n)))
    errors = [r for r in results if not r["ok"]]
    for r in errors[:5]:
        log(f"burst {tag} {ex.name} error: {r['status']} {r['error']}")
    return {"wall_ms": wall * 1000, "lat_ms": [r["ms"] for r in results],
            "errors": len(errors), "hits": hits}


# ---- main -------------------------------------------------------------------

NOPIP_PATCH = ("python/hooks/build-prepare.sh", '-m venv runtime-env', '-m venv --without-pip runtime-env')


def _stop_on_signal(signum, _frame):
    # Turn SIGTERM/SIGINT (ignored by default in background jobs) into an
    # exception, so `finally` stops the executors and their sandboxes.
    raise SystemExit(f"stopped by signal {signum}")


def main():
    signal.signal(signal.SIGTERM, _stop_on_signal)
    signal.signal(signal.SIGINT, _stop_on_signal)
    ap = argparse.ArgumentParser()
    ap.add_argument("--opr", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--samples", type=int, default=25)
    ap.add_argument("--langs", default="node,python")
    ap.add_argument("--warm-blocks", type=int, default=10)
    ap.add_argument("--warm-block-size", type=int, default=250)
    ap.add_argument("--wrk-runs", type=int, default=4)
    ap.add_argument("--wrk-secs", type=int, default=5)
    ap.add_argument("--burst", type=int, default=50)
    ap.add_argument("--burst-rounds", type=int, default=2)
    ap.add_argument("--burst-langs", default="node,python")
    ap.add_argument("--phases", default="cold,warm,burst")
    ap.add_argument("--what-if", default="sync",
                    help="'nopip': also a Python package built without pip/setuptools; "
                         "'sync': also a Python package whose main is sync")
    a = ap.parse_args()
    langs = a.langs.split(",")
    phases = a.phases.split(",")
    os.makedirs(a.out, exist_ok=True)
    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "load": {}, "langs": langs}

    def mark(label):
        report["load"][label] = loadavg()
        log(f"load {label}: {report['load'][label]}")

    # Hello-world sources, one per language.
    for lang in langs:
        d = os.path.join(a.tmp, "fn", lang)
        os.makedirs(d, exist_ok=True)
        name, text = FUNCTIONS[lang]
        with open(os.path.join(d, name), "w") as f:
            f.write(text)
        with tarfile.open(os.path.join(a.tmp, f"{lang}.tar.gz"), "w:gz") as t:
            t.add(os.path.join(d, name), arcname=name)
    mark("start")

    baselines = {}

    def run_baselines(tag):
        if "node" in langs:
            baselines.setdefault("node", []).extend(
                hyperfine("node -e 0", os.path.join(a.out, f"hyperfine-node-{tag}.json")))
        if "python" in langs:
            baselines.setdefault("python", []).extend(hyperfine(
                "/usr/bin/python3 -c pass", os.path.join(a.out, f"hyperfine-python-{tag}.json")))

    run_baselines("before")
    mark("after baselines (before)")

    executors = []
    try:
        plain = Executor(a.opr, "plain", a.tmp)
        executors.append(plain)
        # variant -> (language, package); built through the executor.
        variants = {lang: (lang, plain.build(lang, os.path.join(a.tmp, f"{lang}.tar.gz"),
                                             os.path.join(a.tmp, "packages", lang)))
                    for lang in langs}
        if "nopip" in a.what_if.split(",") and "python" in langs:
            cache = patched_cache(a.opr, a.tmp, "nopip-cache", [NOPIP_PATCH])
            builder = Executor(a.opr, "nopip", a.tmp, cache=cache)
            variants["python-nopip"] = ("python", builder.build(
                "python", os.path.join(a.tmp, "python.tar.gz"),
                os.path.join(a.tmp, "packages", "python-nopip")))
            builder.stop()
        if "sync" in a.what_if.split(",") and "python" in langs:
            d = os.path.join(a.tmp, "fn", "python-sync")
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, "main.py"), "w") as f:
                f.write(PYTHON_SYNC)
            src = os.path.join(a.tmp, "python-sync.tar.gz")
            with tarfile.open(src, "w:gz") as t:
                t.add(os.path.join(d, "main.py"), arcname="main.py")
            variants["python-sync"] = ("python", plain.build(
                "python", src, os.path.join(a.tmp, "packages", "python-sync")))
        report["packages"] = {}
        for v, (lang, pkg) in variants.items():
            with tarfile.open(pkg) as t:
                members = t.getmembers()
            report["packages"][v] = {"bytes": os.path.getsize(pkg), "entries": len(members),
                                     "unpacked": sum(m.size for m in members)}
        log(f"packages: {report['packages']}")

        if "cold" in phases:
            pooled = Executor(a.opr, "pool", a.tmp, pool={lang: 2 for lang in langs})
            executors.append(pooled)
            pooled.wait_pool(settle=1.0)
            # One unmeasured cold start each: page cache, first bwrap.
            for ex in (pooled, plain):
                for v, (lang, pkg) in variants.items():
                    ex.call("POST", "/v1/runtimes/prime/executions", ex.exec_body(lang, pkg))
                    ex.delete("prime")
                    pooled.wait_pool()
            mark("cold start")
            report["cold"] = cold_phase(pooled, plain, variants, a.samples)
            mark("cold end")
            pooled.stop()
            executors.remove(pooled)

        if "warm" in phases:
            mark("warm start")
            report["warm"] = warm_phase(plain, {lang: variants[lang][1] for lang in langs}, langs,
                                        a.warm_blocks, a.warm_block_size, a.wrk_runs,
                                        a.wrk_secs, a.out)
            mark("warm end")

        if "burst" in phases:
            n = a.burst
            blangs = [lang for lang in a.burst_langs.split(",") if lang in langs]
            # Node: every round; Python (and its what-if): one round each,
            # they keep the disk busy for minutes.
            bvariants = [v for v in variants if variants[v][0] in blangs and v != "python-sync"]
            big = Executor(a.opr, "burstpool", a.tmp, pool={lang: n for lang in blangs},
                           extra_env={"OPR_EXECUTOR_MAX_RUNTIMES": str(4 * n)})
            executors.append(big)
            log("filling the burst pool")
            waited = big.wait_pool(settle=2.0, timeout=600)
            log(f"pool of {n} per language ready after {waited:.1f}s")
            report["burst"] = {}
            report["burst_pool_fill_s"] = waited
            mark("burst start")
            for r in range(a.burst_rounds):
                order = [(plain, "nopool"), (big, "pool")]
                if r % 2:
                    order.reverse()
                for v in bvariants:
                    lang, pkg = variants[v]
                    if lang == "python" and r > 0:
                        continue
                    for ex, tag in order:
                        # Let the previous burst's deletions reach the disk.
                        os.sync()
                        ex.wait_pool(settle=3.0, timeout=600)
                        key = f"{v}/{tag}"
                        res = burst_phase(ex, v, lang, pkg, n)
                        res["load"] = loadavg()
                        report["burst"].setdefault(key, []).append(res)
                        log(f"burst {key} round {r + 1}: wall {res['wall_ms']:.0f} ms, "
                            f"errors {res['errors']}, hits {res['hits']}, load {res['load']}")
            mark("burst end")
    finally:
        for ex in executors:
            ex.stop()

    os.sync()
    time.sleep(5)
    run_baselines("after")
    mark("end")
    report["baselines_ms"] = baselines
    with open(os.path.join(a.out, "raw.json"), "w") as f:
        json.dump(report, f, indent=1)
    md = render(report)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(md)
    print(md)


# ---- report -----------------------------------------------------------------

def fmt(x, nd=1):
    return f"{x:.{nd}f}"


LABEL = {"node": "Node", "python": "Python",
         "python-nopip": "Python, package without pip (what-if)",
         "python-sync": "Python, sync `main` (the starter's form)"}
BARE = {"node": "`node -e 0`", "python": "`/usr/bin/python3 -c pass`"}


def render(rep):
    out = []
    b = rep["baselines_ms"]
    base = {lang: pct(b[lang], 50) for lang in b}
    if "packages" in rep:
        out.append("Packages (hello world, built through the executor): " + "; ".join(
            f"{LABEL[v]}: {p['bytes'] / 1e6:.2f} MB, {p['entries']} entries, "
            f"{p['unpacked'] / 1e6:.1f} MB unpacked" for v, p in rep["packages"].items()) + "\n")
    if "cold" in rep:
        out.append("**Cold start** (execution to a new runtime id, request sent → response "
                   "read, one keep-alive connection; ms)\n")
        out.append("| case | n | p50 | p90 | max | p50 ÷ bare interpreter p50 | pool hits | errors | target | met |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---:|---|---|")
        done = set()
        for key in rep["cold"]:
            v, _, tag = key.rpartition("-")
            lang = v.split("-")[0]
            if lang not in done:
                done.add(lang)
                xs = b[lang]
                out.append(f"| bare {BARE[lang]} (hyperfine, baseline) | {len(xs)} | "
                           f"{fmt(pct(xs, 50))} | {fmt(pct(xs, 90))} | {fmt(max(xs))} | 1.00 "
                           f"| | | | |")
            ss = rep["cold"][key]
            xs = [s["ms"] for s in ss]
            errs = sum(1 for s in ss if not s["ok"])
            hits = sum(1 for s in ss if s["hit"])
            target = 15.0 if tag == "pool" else 120.0
            p50 = pct(xs, 50)
            out.append(f"| {LABEL[v]}, {'pool hit' if tag == 'pool' else 'no pool'} | {len(xs)} | "
                       f"{fmt(p50)} | {fmt(pct(xs, 90))} | {fmt(max(xs))} | "
                       f"{p50 / base[lang]:.2f} | {hits if tag == 'pool' else '–'} | {errs} | "
                       f"≤ {target:.0f} | {'**met**' if p50 <= target else 'missed'} |")
        out.append("")
        out.append("Where the cold start goes (p50 of each column separately, ms). The "
                   "executor's `duration` runs from after the runtime is acquired (pool "
                   "runtime assigned, or sandbox spawned) to the function's response; "
                   "acquire = round trip − duration. `timings.txt` is written by the "
                   "runtime helpers inside a no-pool sandbox.\n")
        out.append("| case | round trip | acquire | duration (port wait + first request) | helpers' timings.txt |")
        out.append("|---|---:|---:|---:|---|")
        for key, ss in rep["cold"].items():
            v, _, tag = key.rpartition("-")
            ss = [s for s in ss if s["ok"]]
            if not ss:
                continue
            tot = [s["ms"] for s in ss]
            dur = [s["server_duration_ms"] for s in ss]
            acq = [s["ms"] - s["server_duration_ms"] for s in ss]
            keys = sorted({k for s in ss for k in s.get("timings_ms", {})})
            tim = ", ".join(
                f"{k} {statistics.median(s['timings_ms'][k] for s in ss if k in s['timings_ms']):.0f}"
                for k in keys) or "–"
            out.append(f"| {LABEL[v]}, {'pool hit' if tag == 'pool' else 'no pool'} | "
                       f"{fmt(pct(tot, 50))} | {fmt(pct(acq, 50))} | {fmt(pct(dur, 50))} | {tim} |")
        out.append("")
    if "warm" in rep:
        out.append("**Warm execution** (one warm runtime, concurrency 1, keep-alive; µs). "
                   "Executor: `POST /v1/runtimes/<id>/executions`; direct: `GET /` at the "
                   "runtime's port with the headers the executor sends.\n")
        out.append("| runtime | client | logging | path | n | p50 | p99 | executor adds (p50) | target ≤ 200 µs |")
        out.append("|---|---|---|---|---:|---:|---:|---:|---|")
        for lang in rep["langs"]:
            w = rep["warm"][lang]
            for sfx, lg in (("", "on (default)"), ("_nolog", "off (what-if)")):
                api, d = w["python"][f"api{sfx}_us"], w["python"][f"direct{sfx}_us"]
                add = pct(api, 50) - pct(d, 50)
                out.append(f"| {LABEL[lang]} | http.client | {lg} | runtime directly (baseline) | "
                           f"{len(d)} | {fmt(pct(d, 50), 0)} | {fmt(pct(d, 99), 0)} | | |")
                out.append(f"| {LABEL[lang]} | http.client | {lg} | executor API | {len(api)} | "
                           f"{fmt(pct(api, 50), 0)} | {fmt(pct(api, 99), 0)} | {fmt(add, 0)} | "
                           f"{'**met**' if add <= 200 else 'missed'} |")
            if "wrk" in w:
                dw, aw = w["wrk"]["direct"], w["wrk"]["api"]

                def med(rs, k):
                    return statistics.median(r[k] for r in rs)
                addw = med(aw, "p50_us") - med(dw, "p50_us")
                out.append(f"| {LABEL[lang]} | wrk -t1 -c1 | on (default) | runtime directly (baseline) | "
                           f"{sum(r['requests'] for r in dw)} | {fmt(med(dw, 'p50_us'), 0)} | "
                           f"{fmt(med(dw, 'p99_us'), 0)} | | |")
                out.append(f"| {LABEL[lang]} | wrk -t1 -c1 | on (default) | executor API | "
                           f"{sum(r['requests'] for r in aw)} | {fmt(med(aw, 'p50_us'), 0)} | "
                           f"{fmt(med(aw, 'p99_us'), 0)} | {fmt(addw, 0)} | "
                           f"{'**met**' if addw <= 200 else 'missed'} |")
        out.append("")
    if "burst" in rep:
        n = len(next(iter(rep["burst"].values()))[0]["lat_ms"])
        out.append(f"**Burst** ({n} runtime ids cold-started at once from {n} threads, same "
                   f"package; the pool executor keeps {n} per language, refilled before each "
                   f"burst, {rep.get('burst_pool_fill_s', 0):.0f} s to fill at start)\n")
        out.append("| case | round | errors | pool hits | wall ms | p50 ms | max ms | load after |")
        out.append("|---|---:|---:|---:|---:|---:|---:|---|")
        for key, rounds in rep["burst"].items():
            v, tag = key.split("/")
            for i, r in enumerate(rounds):
                out.append(f"| {LABEL[v]}, {f'pool of {n}' if tag == 'pool' else 'no pool'} | "
                           f"{i + 1} | {r['errors']} | {r['hits'] if tag == 'pool' else '–'} | "
                           f"{fmt(r['wall_ms'], 0)} | {fmt(pct(r['lat_ms'], 50), 0)} | "
                           f"{fmt(max(r['lat_ms']), 0)} | {r['load']} |")
        out.append("")
    out.append("Load average (1/5/15 min): " +
               "; ".join(f"{k}: {v}" for k, v in rep["load"].items()) + "\n")
    return "\n".join(out)


if __name__ == "__main__":
    main()
