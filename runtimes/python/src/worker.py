"""Python worker for opr-runtime (see docs/worker-protocol.md).

Reads frames from the Unix socket on fd 3 on the main thread, loads the
user's function lazily and runs it with the context API of runtime-protocol
§4. Sync functions run on a thread pool; async ones as tasks of one asyncio
loop on a thread of its own, started (and asyncio imported) only when a
function needs it: asyncio costs ~8 MiB and ~25 ms of start-up that a sync
function never uses. A ContextVar tells every log line and every print()
which invocation it belongs to. Standard library only.
"""
import contextvars
import datetime
import importlib
import json
import os
import socket
import struct
import sys
import threading
import types
from _queue import SimpleQueue  # the C queue, without queue.py's imports

INVOKE, CANCEL, CONFIGURE, PING = 1, 2, 3, 4
READY, LOG, RESULT, CANCELLED, CONFIGURED, PONG = 16, 17, 18, 19, 20, 21
MAX_FRAME = 64 << 20
HEAD = struct.Struct(">IBI")  # length, kind, id
CO_COROUTINE = 0x80

_current = contextvars.ContextVar("opr_invocation", default=None)
_inflight = {}  # id -> Invocation
_sock = None
_wlock = threading.Lock()  # one frame at a time on the socket
# Finishing and cancelling an invocation exclude each other, so that a
# RESULT never follows the CANCELLED that gave it up.
_state = threading.Lock()
_load_lock = threading.Lock()
_loop = _loop_tid = None  # the asyncio loop, once an async function needed one
_loop_lock = threading.Lock()
_fdir = _entry = None  # from CONFIGURE
_fn = None  # cached (main, is_async)
_paths = []  # sys.path entries we added for the current function
# Leading traceback frames that belong to us, not to the user.
_STDLIB = os.path.dirname(os.__file__)
_OURS = (__file__, os.path.join(_STDLIB, "asyncio"), os.path.join(_STDLIB, "concurrent"),
         os.path.join(_STDLIB, "threading.py"), "<frozen importlib")


# ---- frames -----------------------------------------------------------------

def _frame(kind, fid, *parts):
    return b"".join((HEAD.pack(5 + sum(map(len, parts)), kind, fid), *parts))


def _send(frame):
    # Any thread: the lock keeps frames whole. A runtime that went away
    # ends the worker, whichever thread noticed.
    try:
        with _wlock:
            _sock.sendall(frame)
    except OSError:
        _leave()


def _leave():
    for s in (sys.__stdout__, sys.__stderr__):
        try:
            s.flush()
        except (OSError, ValueError):
            pass
    os._exit(0)


def _log(inv, stream, text):
    _send(_frame(LOG, inv.id, bytes((stream,)), text.encode("utf-8", "replace")))


class _Reader:
    """Frames in from the socket. The main thread reads (blocking) until an
    async function starts the loop; from then on the loop reads, so that
    async invocations start and finish on the loop thread without a hop
    between threads per request."""

    def __init__(self):
        self.buf = bytearray()
        # One reusable read buffer: no fresh bytes object per read.
        self.scratch = bytearray(256 * 1024)
        self.view = memoryview(self.scratch)

    def read_once(self):
        try:
            n = _sock.recv_into(self.scratch)
        except OSError:
            n = 0
        if n == 0:
            _leave()  # the runtime went away: leave at once, even if threads still run
        buf = self.buf
        buf += self.view[:n]
        pos = 0
        with memoryview(buf) as mv:
            while len(buf) - pos >= 9:
                size, kind, fid = HEAD.unpack_from(buf, pos)
                if not 5 <= size <= MAX_FRAME:
                    _leave()
                if len(buf) - pos - 4 < size:
                    break
                payload = mv[pos + 9:pos + 4 + size].tobytes()
                pos += 4 + size
                _dispatch(kind, fid, payload)
        del buf[:pos]

    def run_on_main_thread(self):
        while _loop is None:
            self.read_once()
        # Hand the socket to the loop; the main thread has nothing left to do.
        _loop.call_soon_threadsafe(_loop.add_reader, _sock.fileno(), self.read_once)
        threading.Event().wait()


def _dispatch(kind, fid, payload):
    if kind == INVOKE:
        m = int.from_bytes(payload[:4], "big")
        meta = json.loads(payload[4:4 + m])
        inv = _inflight[fid] = Invocation(fid, meta.get("logging", True) is not False)
        context = Context(inv, Request(meta, payload[4 + m:]))
        if _fn is not None and _fn[1]:
            _to_loop(inv, context, None)  # loaded async function: straight to the loop
        else:
            # A fresh contextvars.Context per call: the pool thread then sees
            # only this invocation in _current, and nothing leaks into its next job.
            inv.cf = _pool.submit(contextvars.Context().run, _run_sync, inv, context)
    elif kind == CANCEL:
        _cancel(fid)
    elif kind == CONFIGURE:
        _configure(json.loads(payload))
        _send(_frame(CONFIGURED, 0))
    elif kind == PING:
        _send(_frame(PONG, fid))
    # Unknown kinds are ignored, so a newer runtime can add frames.


# ---- the thread pool for sync functions ----------------------------------------

_QUEUED, _RUNNING, _DONE, _CANCELLED = range(4)


class _Job:
    __slots__ = ("fn", "args", "state")

    def __init__(self, fn, args):
        self.fn, self.args, self.state = fn, args, _QUEUED


class _ThreadPool:
    """Threads started as needed, up to `limit`, kept for later jobs, fed
    through a C SimpleQueue. concurrent.futures would do, but it imports
    logging: ~10 ms and ~1 MiB of every worker's start for nothing. A job's
    state changes under _state, the lock cancelling takes too."""

    def __init__(self, limit):
        self.limit, self.threads, self.idle = limit, 0, 0
        self.jobs = SimpleQueue()
        self.lock = threading.Lock()

    def submit(self, fn, *args):
        job = _Job(fn, args)
        self.jobs.put(job)
        with self.lock:
            if self.idle:
                self.idle -= 1  # an idle thread will take it
                return job
            if self.threads >= self.limit:
                return job  # waits for a thread to come free
            self.threads += 1
            n = self.threads
        threading.Thread(target=self._work, name=f"opr-sync-{n}", daemon=True).start()
        return job

    def _work(self):
        while True:
            job = self.jobs.get()
            with _state:
                runs = job.state == _QUEUED  # else cancelled while queued
                if runs:
                    job.state = _RUNNING
            if runs:
                try:
                    job.fn(*job.args)
                except BaseException:  # _run_sync reports its own failures
                    pass
                job.state = _DONE
            with self.lock:
                self.idle += 1


_pool = _ThreadPool(128)


# ---- invocations ------------------------------------------------------------

class Invocation:
    __slots__ = ("id", "logging", "done", "cancelled", "task", "cf")

    def __init__(self, fid, logging):
        self.id, self.logging = fid, logging
        self.done = self.cancelled = False
        self.task = self.cf = None  # asyncio's future / the pool's _Job


def _run_sync(inv, context):
    """Pool thread: loads the function if needed, runs a sync one and sends
    its RESULT (after its LOG frames, which this thread sent first)."""
    _current.set(inv)  # prints and imports during loading land here too
    try:
        fn, is_async = _load()
        if is_async:
            return _to_loop(inv, context, None)
        out = fn(context)
        if hasattr(out, "__await__"):  # e.g. an object with an async __call__
            return _to_loop(inv, context, out)
        result = _output(out)
    except LoadError as e:
        result = {"status": "load_error", "reason": e.reason, "detail": e.detail}, b""
    except BaseException as e:  # SystemExit from user code is a failure, not our exit
        result = _exception(e)
    _finish(inv, _result(inv, *result))


def _async_loop():
    global _loop, _loop_tid
    with _loop_lock:
        if _loop is None:
            import asyncio

            loop = asyncio.new_event_loop()
            t = threading.Thread(target=loop.run_forever, name="opr-async", daemon=True)
            t.start()
            _loop, _loop_tid = loop, t.ident
        return _loop


def _to_loop(inv, context, out):
    """Runs the invocation (or the awaitable `out` it returned) on the loop."""
    import asyncio

    loop = _async_loop()
    with _state:
        if inv.cancelled:
            if hasattr(out, "close"):
                out.close()  # no "never awaited" warning for a cancelled call
            return
        inv.cf = None
        coro = _run_async(inv, context, out)
        if threading.get_ident() == _loop_tid:  # the loop reads the socket: no hop
            inv.task = loop.create_task(coro)
        else:
            inv.task = asyncio.run_coroutine_threadsafe(coro, loop)


async def _run_async(inv, context, out):
    _current.set(inv)  # the task's own context
    try:
        if out is None:
            out = _load()[0](context)
        result = _output(await out)
    except BaseException as e:
        if inv.cancelled:
            return
        result = _exception(e)
    _finish(inv, _result(inv, *result))


def _result(inv, meta, body):
    meta = json.dumps(meta, separators=(",", ":")).encode()
    return _frame(RESULT, inv.id, len(meta).to_bytes(4, "big"), meta, body)


def _finish(inv, frame):
    with _state:
        if inv.cancelled:
            return
        inv.done = True
        _inflight.pop(inv.id, None)
        _send(frame)


def _cancel(fid):
    """Answers CANCELLED: 1 when the invocation is gone or given up, 0 when
    sync code holds a thread (the runtime then replaces this worker)."""
    with _state:
        inv = _inflight.get(fid)
        if inv is not None and inv.task is not None:
            # Async: the loop confirms it. A loop stuck in a CPU loop never
            # does, and the runtime replaces the worker after its grace.
            _loop.call_soon_threadsafe(_cancel_async, inv)
            return
        gone = inv is None  # finished or unknown
        job = inv and inv.cf
        if not gone and job is not None:
            if job.state == _RUNNING:
                return _send(_frame(CANCELLED, fid, b"\x00"))
            job.state = _CANCELLED  # still queued: it never runs
        if not gone:
            inv.cancelled = inv.done = True
            _inflight.pop(fid, None)
    _send(_frame(CANCELLED, fid, b"\x01"))


def _cancel_async(inv):
    with _state:
        if _inflight.pop(inv.id, None) is not None:
            inv.cancelled = inv.done = True
            inv.task.cancel()  # reaches the asyncio task on its next step
    _send(_frame(CANCELLED, inv.id, b"\x01"))


def _output(out):
    if out is None:
        return {"status": "missing_return"}, b""
    if not isinstance(out, dict):
        return _invalid(f"expected the dict built by context.res, got {type(out).__name__}")
    body = out.get("body")
    if isinstance(body, str):
        body = body.encode()
    elif isinstance(body, (bytearray, memoryview)):
        body = bytes(body)
    elif body is None:
        body = b""
    elif isinstance(body, (int, float)):
        body = str(body).encode()
    elif not isinstance(body, bytes):
        return _invalid(f"body must be str or bytes, got {type(body).__name__}")
    code = out.get("statusCode")
    try:
        code = 200 if code is None else int(code)
    except (TypeError, ValueError):
        return _invalid(f"statusCode must be an integer, got {code!r}")
    if not 100 <= code <= 999:
        return _invalid(f"statusCode out of range: {code}")
    headers = out.get("headers") or {}
    if not isinstance(headers, dict):
        return _invalid(f"headers must be a dict, got {type(headers).__name__}")
    pairs = []
    for k, v in headers.items():
        if isinstance(v, (list, tuple)):
            pairs.extend([str(k), str(x)] for x in v)
        else:
            pairs.append([str(k), str(v)])
    return {"status": "ok", "statusCode": code, "headers": pairs}, body


def _exception(e):
    return {"status": "exception", "message": _trace(e).rstrip("\n")}, b""


def _invalid(detail):
    return {"status": "invalid_output", "detail": detail}, b""


def _trace(e):
    tb = e.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_OURS):
        tb = tb.tb_next
    import traceback  # only when something failed: keeps start-up lean

    return "".join(traceback.format_exception(type(e), e, tb or e.__traceback__))


def _is_async(fn):
    """asyncio.iscoroutinefunction without importing asyncio: the code flag,
    through functools.partial and the marker asyncio's decorators set."""
    while hasattr(fn, "func") and hasattr(fn, "args") and hasattr(fn, "keywords"):
        fn = fn.func  # functools.partial
    if getattr(fn, "_is_coroutine", None) is not None:
        return True
    code = getattr(getattr(fn, "__func__", fn), "__code__", None)
    return bool(code is not None and code.co_flags & CO_COROUTINE)


# ---- loading the user's function ----------------------------------------------

class LoadError(Exception):
    def __init__(self, reason, detail):
        self.reason, self.detail = reason, detail


def _configure(cfg):
    global _fdir, _entry, _fn
    for k, v in (cfg.get("env") or {}).items():
        os.environ[str(k)] = str(v)
    # Forget the old function: its package, its sibling modules, its paths.
    # Installed packages stay: C extensions cannot be loaded twice anyway.
    old = _fdir and os.path.join(_fdir, "")
    for name, mod in list(sys.modules.items()):
        f = getattr(mod, "__file__", None) or ""
        mine = old and f.startswith(old) and "/runtime-env/" not in f
        if name == "function" or name.startswith("function.") or mine:
            del sys.modules[name]
    for p in _paths:
        if p in sys.path:
            sys.path.remove(p)
    _paths.clear()
    _fdir, _entry, _fn = cfg.get("functionDir"), cfg.get("entrypoint"), None


def _add_paths():
    # Function dir first (sibling imports), then the packages the build
    # installed into runtime-env (with their .pth files), then the parent dir.
    before = list(sys.path)
    import glob
    import site

    for sp in sorted(glob.glob(os.path.join(_fdir, "runtime-env/lib/python3*/site-packages"))):
        site.addsitedir(sp)
    front = [p for p in [_fdir] + sys.path if p not in before]
    parent = os.path.dirname(_fdir)
    back = [parent] if parent not in before and parent not in front else []
    sys.path[:] = front + before + back
    _paths[:] = front + back


def _load():
    if _fn is not None:
        return _fn
    with _load_lock:  # several pool threads may ask at once
        return _fn if _fn is not None else _load_now()


def _load_now():
    global _fn
    if not _fdir or not _entry:
        raise LoadError("other", "no function configured")
    if not os.path.isfile(os.path.join(_fdir, _entry)):
        raise LoadError("missing", _entry)
    if not _paths:
        _add_paths()
    importlib.invalidate_caches()  # the directory may have been filled after start
    entry = os.path.normpath(_entry)
    name = "function." + (entry[:-3] if entry.endswith(".py") else entry).replace(os.sep, ".")
    try:
        _package()
        __import__(name)  # the C import path hides importlib's own frames
        mod = sys.modules[name]
    except SyntaxError as e:  # also IndentationError, TabError
        raise LoadError("syntax", f"{e.msg} ({e.filename}, line {e.lineno})")
    except BaseException as e:
        raise LoadError("other", _trace(e).rstrip("\n"))
    main = getattr(mod, "main", None)
    if not callable(main):
        sys.modules.pop(name, None)  # re-run the module on the next attempt
        raise LoadError("signature", "module has no callable 'main'")
    _fn = (main, _is_async(main))
    return _fn


def _package():
    # Map the package name `function` onto the function dir, whatever the
    # directory is called (it is .../function in a real container).
    if "function" in sys.modules:
        return
    init = os.path.join(_fdir, "__init__.py")
    if os.path.isfile(init):
        import importlib.util

        spec = importlib.util.spec_from_file_location("function", init, submodule_search_locations=[_fdir])
        pkg = sys.modules["function"] = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(pkg)
        except BaseException:
            del sys.modules["function"]
            raise
    else:
        pkg = sys.modules["function"] = types.ModuleType("function")
        pkg.__path__ = [_fdir]


# ---- the context API (runtime-protocol §4) ------------------------------------

class Request:
    __slots__ = ("body_binary", "headers", "method", "scheme", "host", "port",
                 "path", "query_string", "query", "url")

    def __init__(self, meta, body):
        self.body_binary = body
        self.headers = meta.get("headers") or {}
        self.method = meta.get("method", "GET")
        self.scheme = meta.get("scheme", "http")
        self.host = meta.get("host", "")
        self.port = int(meta.get("port") or 80)
        self.path = meta.get("path", "/")
        self.query_string = meta.get("queryString", "")
        self.query = meta.get("query") or {}
        self.url = meta.get("url", "")

    @property
    def body_text(self):
        return self.body_binary.decode("utf-8", "replace")

    body_raw = body_text  # deprecated alias

    @property
    def body_json(self):
        return json.loads(self.body_text)  # raises on invalid or empty input

    @property
    def body(self):
        if self.headers.get("content-type", "text/plain").lower().startswith("application/json"):
            return self.body_json if self.body_binary else {}
        return self.body_text


def _set(headers, name, value):
    h = {k: v for k, v in (headers or {}).items() if str(k).lower() != name}
    h[name] = value
    return h


class Response:
    def binary(self, bytes, statusCode=200, headers=None):
        return {"body": bytes, "statusCode": statusCode, "headers": dict(headers or {})}

    def text(self, body, statusCode=200, headers=None):
        return self.binary(str(body).encode(), statusCode, headers)

    def json(self, obj, statusCode=200, headers=None):
        body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
        return self.text(body, statusCode, _set(headers, "content-type", "application/json"))

    def empty(self):
        return self.binary(b"", 204)

    def redirect(self, url, statusCode=301, headers=None):
        return self.binary(b"", statusCode, _set(headers, "location", url))

    def send(self, body, statusCode=200, headers=None):
        return self.binary(body, statusCode, headers)  # converted when sent


_RES = Response()


class Context:
    __slots__ = ("req", "res", "_inv")

    def __init__(self, inv, req):
        self.req, self.res, self._inv = req, _RES, inv

    def log(self, *args):
        self._write(1, args)

    def error(self, *args):
        self._write(2, args)

    def _write(self, stream, args):
        if self._inv.logging and not self._inv.done:  # late lines are dropped anyway
            _log(self._inv, stream, " ".join(map(_text, args)))


def _jsonable(o):
    if isinstance(o, (set, frozenset)):
        return list(o)
    if isinstance(o, (datetime.date, datetime.time)):
        return o.isoformat()
    if isinstance(o, (bytes, bytearray, memoryview)):
        return bytes(o).decode("utf-8", "replace")
    if isinstance(o, BaseException):
        return _trace(o).rstrip("\n")
    return str(o)


_RICH = (set, frozenset, bytes, bytearray, memoryview, datetime.date, datetime.time, BaseException)


def _text(v):
    """One log argument as text (runtime-protocol §3.13)."""
    try:
        if isinstance(v, str):
            return v
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, _RICH):
            v = _jsonable(v)
        if isinstance(v, (dict, list, tuple)):
            try:
                return json.dumps(v, separators=(",", ":"), ensure_ascii=False, default=_jsonable)
            except (TypeError, ValueError):  # tuple keys, cycles: plain str() below
                pass
        return str(v)
    except Exception:  # a __str__ that raises must not fail the function
        return object.__repr__(v)


# ---- native output ----------------------------------------------------------

class _Capture:
    """Stands in for sys.stdout/sys.stderr: text written while an invocation
    is current goes to that invocation's log, anything else to the real stream."""

    def __init__(self, real):
        self._real = real

    def write(self, s):
        inv = _current.get()
        if inv is None or inv.done:
            return self._real.write(s)
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if s and inv.logging:
            _log(inv, 3, s)
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        self._real.flush()

    def __getattr__(self, name):
        return getattr(self._real, name)


# ---- start ------------------------------------------------------------------

if __name__ == "__main__":
    for real in (sys.__stdout__, sys.__stderr__):
        real.reconfigure(line_buffering=True)  # pass-through text reaches the runtime promptly
    sys.stdout, sys.stderr = _Capture(sys.__stdout__), _Capture(sys.__stderr__)
    _sock = socket.socket(fileno=3)
    ready = {"language": "python", "version": sys.version.split()[0], "pid": os.getpid()}
    _send(_frame(READY, 0, json.dumps(ready).encode()))
    if os.environ.pop("OPR_WORKER_STANDBY", "") == "1":
        # A standby worker (warm pool) has time to spare and no function yet:
        # import asyncio now, so an async function's first request after the
        # assignment does not wait ~25 ms for it.
        threading.Thread(target=importlib.import_module, args=("asyncio",), daemon=True).start()
    _Reader().run_on_main_thread()
