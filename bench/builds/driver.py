#!/usr/bin/env python3
"""Build benchmark driver (bench/builds/run.sh): cold vs warm dependency
cache, and the build queue's own overhead.

One executor (process backend, OPR_EXECUTOR_BUILD_WORKERS=1 so builds never
overlap) builds the Node and Python functions of bench/builds/functions
through POST /v1/builds, polling GET /v1/builds/{id} every 20 ms. Each round
copies the function to a fresh folder and, with one new cacheKey, builds:

- cold: the cacheKey was never used (empty cache; the helpers then save the
  package managers' caches and the installed dependencies into its artifact);
- warm: the same cacheKey after the driver rewrote the BUILD_MARK line of
  the function's code (same lockfile / requirements): dependencies must be
  reused (the log says the install step was skipped) and the package must
  hold the edited code, so this measures dependency caching, not output
  caching;
- changed: the same cacheKey with the dependency files of bench/builds/changed
  (one more dependency): the install must run again and the package must
  hold the new dependency;
- nokey (optional): no cacheKey at all (no restore, no save).

Per build it records the job's own timestamps (created, started, finished:
Unix seconds) and the helper's progress lines in the build log (Environment
preparation, Build command execution = the install step, Build packaging,
Build finished), whose relative spacing is real (executor-api 7.7). The last
warm package of each language is started and called once: it must answer
with the edited BUILD_MARK.
"""

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import tarfile
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path

IMAGES = {"node": "openruntimes/node:v5-22", "python": "openruntimes/python:v5-3.12"}
ENTRYPOINTS = {"node": "index.js", "python": "main.py"}
# What the "changed" build's package must hold: the added dependency.
CHANGED_DEP = {"node": "node_modules/is-number/package.json", "python": "/site-packages/packaging/__init__.py"}
MARK_LINE = {"node": re.compile(r"^const BUILD_MARK = .*$", re.M), "python": re.compile(r"^BUILD_MARK = .*$", re.M)}
START = 'cp /tmp/code.tar.gz /mnt/code/code.tar.gz && nohup helpers/start.sh "bash helpers/server.sh"'
FINAL = ("succeeded", "failed", "cancelled")


class Executor:
    def __init__(self, opr, work, extra_env):
        self.secret = secrets.token_hex(16)
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("OPR_") and k not in ("NODE_EXTRA_CA_CERTS", "NODE_OPTIONS")
        }
        env.update(
            OPR_EXECUTOR_SECRET=self.secret,
            OPR_EXECUTOR_HOSTNAME="bench-builds-" + secrets.token_hex(4),
            OPR_EXECUTOR_WORK_DIR=str(work),
            OPR_EXECUTOR_BUILD_WORKERS="1",
            XDG_CACHE_HOME=str(work / "xdg-cache"),
        )
        env.update(extra_env)
        self.proc = subprocess.Popen(
            [opr, "executor", "--listen", "127.0.0.1:0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines = []
        deadline = time.time() + 30
        self.addr = None
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.match(r"opr executor listening on http://(\S+)", line)
            if m:
                self.addr = m.group(1)
                break
        if not self.addr:
            self.proc.kill()
            sys.exit("executor did not start:\n" + "".join(self.lines))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self):
        for line in self.proc.stdout:
            if len(self.lines) < 5000:
                self.lines.append(line)

    def call(self, method, path, body=None, timeout=120):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://{self.addr}{path}",
            data=data,
            method=method,
            headers={
                "authorization": f"Bearer {self.secret}",
                "content-type": "application/json",
                "accept": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"null")

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def parse_ts(s):
    return datetime.fromisoformat(s).timestamp()


def marks(output):
    """Seconds since the first chunk of each helper progress line."""
    found = {}
    if not output:
        return found
    t0 = parse_ts(output[0]["timestamp"])
    keys = {
        "prep_start": "Environment preparation started.",
        "prep_end": "Environment preparation finished.",
        "install_start": "Build command execution started.",
        "install_end": "Build command execution finished.",
        "pack_start": "Build packaging started.",
        "pack_end": "Build packaging finished.",
        "end": "Build finished.",
    }
    for c in output:
        for k, text in keys.items():
            if k not in found and text in c["content"]:
                found[k] = parse_ts(c["timestamp"]) - t0
    return found


def build(ex, lang, fn_dir, dest, key, command):
    body = {
        "image": IMAGES[lang],
        "entrypoint": ENTRYPOINTS[lang],
        "source": {"type": "folder", "path": str(fn_dir)},
        "destination": str(dest),
        "timeout": 900,
        "memory": 1024,
    }
    if key:
        body["cacheKey"] = key
    if command:
        body["command"] = command
    t0 = time.time()
    status, job = ex.call("POST", "/v1/builds", body)
    if status != 202:
        sys.exit(f"submit failed: {status} {job}")
    deadline = t0 + 900
    while job["state"] not in FINAL:
        if time.time() > deadline:
            sys.exit(f"build {job['id']} did not finish: {job}")
        time.sleep(0.02)
        _, job = ex.call("GET", f"/v1/builds/{job['id']}")
    wall = time.time() - t0
    if job["state"] != "succeeded":
        sys.exit(f"{lang} build failed: {json.dumps(job)[-4000:]}")
    output = job["result"]["output"]
    text = "".join(c["content"] for c in output)
    m = marks(output)
    rec = {
        "id": job["id"],
        "lang": lang,
        "key": key,
        "wall": wall,
        "job": job["finished"] - job["started"],
        "queue_ms": (job["started"] - job["created"]) * 1000.0,
        "script": m.get("end"),
        "prep": (m["prep_end"] - m["prep_start"]) if "prep_end" in m else None,
        "install": (m["install_end"] - m["install_start"]) if "install_end" in m else None,
        "pack": (m["pack_end"] - m["pack_start"]) if "pack_end" in m else None,
        "hit": "Build cache hit." in text,
        "saved": re.findall(r"Build cache (saved\.[^\r\n]*|save skipped[^\r\n]*)", text),
        "path": job["result"]["path"],
        "size": job["result"]["size"],
        "log": text,
    }
    return rec


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def set_mark(src, lang, mark):
    """Rewrites the function's BUILD_MARK line (its code, not its deps)."""
    f = src / ENTRYPOINTS[lang]
    text, n = MARK_LINE[lang].subn(
        f"const BUILD_MARK = '{mark}';" if lang == "node" else f'BUILD_MARK = "{mark}"', f.read_text()
    )
    if n != 1:
        sys.exit(f"{f}: no BUILD_MARK line")
    f.write_text(text)


def package_file(path, name):
    with tarfile.open(path, "r:*") as t:
        for m in t.getmembers():
            if m.name.removeprefix("./") == name:
                f = t.extractfile(m)
                return f.read().decode() if f else None
    return None


def package_has(path, suffix):
    with tarfile.open(path, "r:*") as t:
        return any(m.name.endswith(suffix) for m in t.getmembers())


def check(cond, what, rec):
    if not cond:
        sys.exit(f"{rec['lang']} {rec['kind']} build: {what}\n{rec['log'][-3000:]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--opr", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tmp", required=True)
    ap.add_argument("--functions", required=True)
    ap.add_argument("--changed", required=True, help="dependency files of the changed build, per language")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--langs", default="node,python")
    ap.add_argument("--nokey", type=int, default=1, help="also build without cacheKey")
    ap.add_argument("--node-install", default="", help="install step (default: the executor's)")
    ap.add_argument("--python-install", default="")
    ap.add_argument("--tmpfs-mb", default="", help="OPR_EXECUTOR_BUILD_TMPFS_MB (default: the executor's)")
    a = ap.parse_args()
    out, tmp = Path(a.out), Path(a.tmp)
    langs = [l for l in a.langs.split(",") if l]
    installs = {"node": a.node_install, "python": a.python_install}
    default_step = {lang: not installs[lang] for lang in langs}
    ex = Executor(a.opr, tmp / "work", {"OPR_EXECUTOR_BUILD_TMPFS_MB": a.tmpfs_mb} if a.tmpfs_mb else {})
    records = []
    checks = {}
    try:
        for rep in range(a.reps):
            for lang in langs:
                src = tmp / f"src-{lang}-{rep}"
                shutil.copytree(Path(a.functions) / lang, src)
                dest = tmp / "packages"
                key = f"bench-{lang}-{rep}-{secrets.token_hex(4)}"
                kinds = ["cold", "warm", "changed"] + (["nokey"] if a.nokey else [])
                for kind in kinds:
                    mark = f"{kind}-{rep}-{secrets.token_hex(3)}"
                    set_mark(src, lang, mark)
                    if kind == "changed":
                        for f in (Path(a.changed) / lang).iterdir():
                            shutil.copy(f, src / f.name)
                    r = build(ex, lang, src, dest, None if kind == "nokey" else key, installs[lang])
                    r["kind"], r["rep"], r["mark"] = kind, rep, mark
                    r["reused"] = "Install step skipped" in r["log"]
                    code = package_file(r["path"], ENTRYPOINTS[lang]) or ""
                    check(mark in code, f"the package does not hold the edited code ({mark})", r)
                    if kind == "warm":
                        check(r["hit"], "did not hit the cache", r)
                        if default_step[lang]:
                            check(r["reused"], "dependencies were not reused", r)
                    if kind in ("cold", "changed"):
                        check(not r["reused"], "reused dependencies it must install", r)
                    if kind == "changed":
                        check("Installed dependencies: not reused, changed:" in r["log"], "no changed-inputs line", r)
                        check(package_has(r["path"], CHANGED_DEP[lang]), f"no {CHANGED_DEP[lang]} in the package", r)
                    records.append(r)
                    print(
                        f"rep {rep} {lang:6} {kind:7} job {r['job']:6.2f}s install "
                        f"{(r['install'] or 0):6.2f}s prep {(r['prep'] or 0):5.2f}s pack {(r['pack'] or 0):5.2f}s "
                        f"queue {r['queue_ms']:.2f}ms {'hit' if r['hit'] else ''} "
                        f"{'deps-reused' if r['reused'] else ''} {r['saved']}",
                        file=sys.stderr,
                        flush=True,
                    )
        # The warm build gives a working function with the edited code.
        for lang in langs:
            last = [r for r in records if r["lang"] == lang and r["kind"] == "warm"][-1]
            status, res = ex.call(
                "POST",
                f"/v1/runtimes/check-{lang}/executions",
                {
                    "image": IMAGES[lang],
                    "source": last["path"],
                    "entrypoint": ENTRYPOINTS[lang],
                    "runtimeEntrypoint": START,
                    "path": "/",
                    "method": "GET",
                    "headers": {},
                    "timeout": 60,
                },
            )
            checks[lang] = res.get("body") if isinstance(res, dict) else res
            if status != 200 or res.get("statusCode") != 200:
                sys.exit(f"{lang}: the warm package does not serve: {status} {res}")
            if last["mark"] not in str(checks[lang]):
                sys.exit(f"{lang}: the warm package serves old code: {checks[lang]} (expected {last['mark']})")
            print(f"{lang}: warm package answers {checks[lang]}", file=sys.stderr)
    finally:
        ex.stop()

    for r in records:
        r.pop("log", None)
    (out / "raw.json").write_text(json.dumps({"records": records, "checks": checks}, indent=1))

    lines = [
        "| function | rounds | cold job (s) | warm job (s) | **cold / warm** | changed deps, job (s) | no-key job (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for lang in langs:
        sel = lambda kind, field: [r[field] for r in records if r["lang"] == lang and r["kind"] == kind]
        cj, wj, xj = med(sel("cold", "job")), med(sel("warm", "job")), med(sel("changed", "job"))
        nk = med(sel("nokey", "job")) if a.nokey else float("nan")
        deps = "5 npm deps (10 packages, lockfile)" if lang == "node" else "5 pip deps (9 packages)"
        lines.append(
            f"| {lang} ({deps}) | {len(sel('cold', 'job'))} | {cj:.2f} | {wj:.2f} | "
            f"**{cj / wj:.2f}x** | {xj:.2f} | {nk:.2f} |"
        )
    lines.append("")
    lines.append("Per-round ratios (cold / warm job of the same round): " + "; ".join(
        f"{lang} " + ", ".join(
            f"{c['job'] / w['job']:.1f}x"
            for c, w in zip(
                [r for r in records if r["lang"] == lang and r["kind"] == "cold"],
                [r for r in records if r["lang"] == lang and r["kind"] == "warm"],
            )
        )
        for lang in langs
    ) + ".")
    lines.append("")
    lines.append("| function | phase | cold (s) | warm (s) | changed (s) |\n|---|---|---|---|---|")
    for lang in langs:
        for field, label in (
            ("prep", "environment preparation (cache and dependency restore, venv)"),
            ("install", "install step"),
            ("pack", "packaging"),
            ("script", "helper build.sh, first to last log line"),
            ("job", "job, started to finished"),
            ("wall", "submit to final state seen by the client"),
        ):
            vals = [
                med([r[field] for r in records if r["lang"] == lang and r["kind"] == kind])
                for kind in ("cold", "warm", "changed")
            ]
            lines.append(f"| {lang} | {label} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    q = sorted(r["queue_ms"] for r in records)
    lines.append("")
    lines.append(
        f"Queue overhead (job `started` - `created`, idle queue, {len(q)} jobs): "
        f"median {statistics.median(q):.2f} ms, p90 {q[int(len(q) * 0.9) - 1]:.2f} ms, max {q[-1]:.2f} ms."
    )
    md = "\n".join(lines) + "\n"
    (out / "results.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
