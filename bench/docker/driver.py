#!/usr/bin/python3
"""Docker cold starts, one run: `docker run` of the runtime image until its
first HTTP 200 (the baseline), and the executor on the Docker backend with a
pool miss and with a pool hit. Standard library only."""

import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

OPR = os.environ.get("OPR", "target/release/opr")
N = int(os.environ.get("SAMPLES", "15"))
SECRET = "bench"
IMAGE = "openruntimes/node:v5-22"
START = 'cp /tmp/code.tar.gz /mnt/code/code.tar.gz && nohup helpers/start.sh "bash helpers/server.sh"'


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout.strip()


def call(addr, method, path, body=None, timeout=60):
    host, port = addr.rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    headers = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json", "Accept": "application/json"}
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def health(addr):
    try:
        with socket.create_connection(addr, timeout=1) as s:
            s.settimeout(1)
            s.sendall(b"GET /__opr/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return s.recv(12).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


def start_executor(work, host, pool):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPR_") and k != "NODE_EXTRA_CA_CERTS"}
    env.update(OPR_EXECUTOR_SECRET=SECRET, OPR_EXECUTOR_HOSTNAME=host, XDG_CACHE_HOME=os.path.join(work, "cache"))
    if pool:
        env["OPR_EXECUTOR_WARM_POOL"] = f"{IMAGE}={pool}"
    p = subprocess.Popen([OPR, "executor", "--backend", "docker", "--listen", "127.0.0.1:0", "--work-dir", os.path.join(work, "w")],
                         env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    return p, line.split("http://")[1].split()[0]


def stop(p):
    p.terminate()
    p.wait(timeout=60)


def pctl(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def main():
    work = tempfile.mkdtemp(prefix="opr-bench-docker-")
    fn = os.path.join(work, "fn")
    os.makedirs(fn)
    with open(os.path.join(fn, "index.js"), "w") as f:
        f.write('module.exports = async (c) => c.res.text("Hello, World!");\n')
    src = os.path.join(work, "src.tar.gz")
    with tarfile.open(src, "w:gz") as t:
        t.add(fn, arcname=".")
    dest = os.path.join(work, "builds")
    os.makedirs(dest)

    # Build once through the Docker backend.
    p, addr = start_executor(work, "bd-build", 0)
    st, data = call(addr, "POST", "/v1/runtimes", {
        "runtimeId": "bench-build", "image": IMAGE, "source": src, "destination": dest, "entrypoint": "index.js",
        "command": 'tar -zxf /tmp/code.tar.gz -C /mnt/code && bash helpers/build.sh ""', "remove": True, "timeout": 300})
    stop(p)
    assert st == 201, data
    package = json.loads(data)["path"]
    pkgdir = os.path.join(work, "pkg")
    os.makedirs(pkgdir)
    shutil.copy(package, os.path.join(pkgdir, "code.tar.gz"))

    results = {"docker run (baseline)": [], "executor, pool miss": [], "executor, pool hit": []}

    # Baseline: docker run until the first 200.
    for i in range(N):
        t0 = time.perf_counter()
        cid = sh("docker", "run", "-d", "-p", "127.0.0.1::3000", "-v", f"{pkgdir}:/tmp", "-e", "OPEN_RUNTIMES_SECRET=",
                 "-e", "OPEN_RUNTIMES_ENTRYPOINT=index.js", IMAGE, "bash", "-c", START)
        port = None
        while True:
            if port is None:
                out = subprocess.run(["docker", "port", cid, "3000/tcp"], capture_output=True, text=True).stdout.strip()
                if out:
                    port = int(out.splitlines()[0].rsplit(":", 1)[1])
            if port is not None:
                try:
                    st, _ = call(f"127.0.0.1:{port}", "GET", "/", timeout=2)
                    if st == 200:
                        break
                except OSError:
                    pass
            if time.perf_counter() - t0 > 60:
                raise SystemExit("docker run baseline did not answer within 60 s")
            time.sleep(0.005)
        results["docker run (baseline)"].append((time.perf_counter() - t0) * 1000)
        sh("docker", "rm", "-f", cid)

    body = {"image": IMAGE, "source": package, "entrypoint": "index.js", "runtimeEntrypoint": START, "path": "/", "timeout": 60}

    # Pool miss.
    p, addr = start_executor(work, "bd-miss", 0)
    for i in range(N):
        t0 = time.perf_counter()
        st, data = call(addr, "POST", f"/v1/runtimes/miss-{i}/executions", body)
        results["executor, pool miss"].append((time.perf_counter() - t0) * 1000)
        assert st == 200 and json.loads(data)["body"] == "Hello, World!", data
        call(addr, "DELETE", f"/v1/runtimes/miss-{i}")
    stop(p)

    # Pool hit: before each sample, wait until a standby container serves.
    p, addr = start_executor(work, "bd-hit", 2)
    for i in range(N):
        deadline = time.time() + 90
        while True:
            ids = sh("docker", "ps", "-q", "--filter", "label=openruntimes-executor=bd-hit", "--filter", "label=opr-pool").split()
            free = [c for c in ids if not sh("docker", "inspect", "-f", "{{.Name}}", c).lstrip("/").startswith("bd-hit-hit-")]
            ready = 0
            for c in ids:
                out = subprocess.run(["docker", "port", c, "3000/tcp"], capture_output=True, text=True).stdout.strip()
                if out:
                    host, port = out.splitlines()[0].rsplit(":", 1)
                    ready += health((host, int(port)))
            if ready >= 2 or time.time() > deadline:
                break
            time.sleep(0.05)
        time.sleep(0.3)  # let the refill's start finish before measuring
        t0 = time.perf_counter()
        st, data = call(addr, "POST", f"/v1/runtimes/hit-{i}/executions", body)
        results["executor, pool hit"].append((time.perf_counter() - t0) * 1000)
        assert st == 200 and json.loads(data)["body"] == "Hello, World!", data
        hit = not os.path.exists(os.path.join(work, "w", f"bd-hit-hit-{i}"))
        results.setdefault("pool hits", []).append(1 if hit else 0)
        call(addr, "DELETE", f"/v1/runtimes/hit-{i}")
    stop(p)

    base = statistics.median(results["docker run (baseline)"])
    print(f"| case | n | p50 ms | p90 ms | p50 ÷ docker run |")
    print(f"|---|---:|---:|---:|---:|")
    for k in ["docker run (baseline)", "executor, pool miss", "executor, pool hit"]:
        xs = results[k]
        print(f"| {k} | {len(xs)} | {statistics.median(xs):.1f} | {pctl(xs, 0.9):.1f} | {statistics.median(xs) / base:.2f} |")
    print(f"\npool hits: {sum(results['pool hits'])}/{N}; load: {os.getloadavg()}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
