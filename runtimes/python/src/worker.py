"""Python worker for opr-runtime (see docs/worker-protocol.md).

Reads frames from the Unix socket on fd 3, loads the user's function lazily
and runs it with the context API of runtime-protocol §4. Async functions run
as tasks on one event loop, sync functions on a thread pool; a ContextVar
tells every log line and every print() which invocation it belongs to.
Standard library only.
"""
import asyncio
import concurrent.futures
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

INVOKE, CANCEL, CONFIGURE, PING = 1, 2, 3, 4
READY, LOG, RESULT, CANCELLED, CONFIGURED, PONG = 16, 17, 18, 19, 20, 21
MAX_FRAME = 64 << 20
HEAD = struct.Struct(">IBI")  # length, kind, id

_current = contextvars.ContextVar("opr_invocation", default=None)
_inflight = {}  # id -> Invocation
_pool = concurrent.futures.ThreadPoolExecutor(128, "opr-sync")  # threads start lazily
_loop = _loop_tid = _transport = None
_out = []  # frames queued for the next write (loop thread only)
_pending, _lock = [], threading.Lock()  # frames from other threads
_fdir = _entry = None  # from CONFIGURE
_fn = None  # cached (main, is_async)
_paths = []  # sys.path entries we added for the current function
# Leading traceback frames that belong to us, not to the user.
_OURS = (__file__, os.path.dirname(asyncio.__file__),
         os.path.dirname(concurrent.futures.__file__), "<frozen importlib")


# ---- frames -----------------------------------------------------------------

def _frame(kind, fid, *parts):
    return b"".join((HEAD.pack(5 + sum(map(len, parts)), kind, fid), *parts))


def _send(frame):
    # Frames of one loop iteration leave in a single write (fewer syscalls).
    if not _out:
        _loop.call_soon(_flush)
    _out.append(frame)


def _flush():
    global _out
    frames, _out = _out, []
    _transport.writelines(frames)


def _emit(frame):
    if threading.get_ident() == _loop_tid:
        _send(frame)
        return
    # Threads must not touch the transport. They queue frames and wake the
    # loop once per batch (each wake-up costs a syscall and a GIL hand-off).
    with _lock:
        _pending.append(frame)
        if len(_pending) > 1:
            return  # a _drain is already scheduled
    _loop.call_soon_threadsafe(_drain)


def _drain():
    global _pending
    if not _pending:  # a thread appending now schedules its own _drain
        return
    with _lock:
        frames, _pending = _pending, []
    for frame in frames:
        _send(frame)


def _log(inv, stream, text):
    _emit(_frame(LOG, inv.id, bytes((stream,)), text.encode("utf-8", "replace")))


class _Conn(asyncio.BufferedProtocol):
    # One reusable read buffer: a plain Protocol gets a fresh 256 KiB bytes
    # object per read, which glibc serves with mmap/munmap every request.
    def __init__(self):
        self.buf = bytearray()
        self.scratch = bytearray(256 * 1024)

    def get_buffer(self, sizehint):
        return self.scratch

    def buffer_updated(self, nbytes):
        self.data_received(memoryview(self.scratch)[:nbytes])

    def connection_made(self, transport):
        global _transport
        _transport = transport

    def connection_lost(self, exc):
        # The runtime went away: leave at once, even if sync threads still run.
        for s in (sys.__stdout__, sys.__stderr__):
            s.flush()
        os._exit(0)

    def data_received(self, data):
        buf, pos = self.buf, 0
        buf += data
        with memoryview(buf) as mv:
            while len(buf) - pos >= 9:
                n, kind, fid = HEAD.unpack_from(buf, pos)
                if not 5 <= n <= MAX_FRAME:
                    self.buf = bytearray()
                    _transport.close()
                    return
                if len(buf) - pos - 4 < n:
                    break
                payload = mv[pos + 9:pos + 4 + n].tobytes()
                pos += 4 + n
                _dispatch(kind, fid, payload)
        del buf[:pos]


def _dispatch(kind, fid, payload):
    if kind == INVOKE:
        m = int.from_bytes(payload[:4], "big")
        meta = json.loads(payload[4:4 + m])
        inv = _inflight[fid] = Invocation(fid, meta.get("logging", True) is not False)
        context = Context(inv, Request(meta, payload[4 + m:]))
        if _fn is not None and not _fn[1]:
            _submit(inv, _fn[0], context)  # loaded sync function: straight to a thread
        else:
            inv.task = _loop.create_task(_run(inv, context))
    elif kind == CANCEL:
        _send(_frame(CANCELLED, fid, b"\x01" if _cancel(fid) else b"\x00"))
    elif kind == CONFIGURE:
        _configure(json.loads(payload))
        _send(_frame(CONFIGURED, 0))
    elif kind == PING:
        _send(_frame(PONG, fid))
    # Unknown kinds are ignored, so a newer runtime can add frames.


# ---- invocations ------------------------------------------------------------

class Invocation:
    __slots__ = ("id", "logging", "done", "cancelled", "task", "cf")

    def __init__(self, fid, logging):
        self.id, self.logging = fid, logging
        self.done = self.cancelled = False
        self.task = self.cf = None


async def _run(inv, context, out=None):
    """Loads the function if needed and runs async code on the loop."""
    _current.set(inv)  # the task's own context: prints and imports land here
    try:
        if out is None:
            fn, is_async = _load()
            if not is_async:
                return _submit(inv, fn, context)
            out = fn(context)
        result = _output(await out)
    except LoadError as e:
        result = {"status": "load_error", "reason": e.reason, "detail": e.detail}, b""
    except BaseException as e:  # SystemExit from user code is a failure, not our exit
        if inv.cancelled:
            return
        result = _exception(e)
    _finish(inv, _result(inv, *result))


def _submit(inv, fn, context):
    # A fresh contextvars.Context per call: the pool thread then sees only
    # this invocation in _current, and nothing leaks into its next job.
    inv.cf = _pool.submit(contextvars.Context().run, _run_sync, inv, fn, context)


def _run_sync(inv, fn, context):
    """Runs a sync function on a pool thread and builds its RESULT there."""
    _current.set(inv)
    try:
        out = fn(context)
        if hasattr(out, "__await__"):  # e.g. an object with an async __call__
            return _loop.call_soon_threadsafe(_await, inv, context, out)
        result = _output(out)
    except BaseException as e:
        result = _exception(e)
    # _finish runs on the loop and sends this thread's queued LOG frames first.
    _loop.call_soon_threadsafe(_finish, inv, _result(inv, *result))


def _await(inv, context, out):
    _drain()
    inv.cf = None
    if not inv.cancelled:
        inv.task = _loop.create_task(_run(inv, context, out))
    elif hasattr(out, "close"):
        out.close()  # no "never awaited" warning for a cancelled call


def _result(inv, meta, body):
    meta = json.dumps(meta, separators=(",", ":")).encode()
    return _frame(RESULT, inv.id, len(meta).to_bytes(4, "big"), meta, body)


def _finish(inv, frame):
    _drain()  # the invocation's LOG frames first
    if not inv.cancelled:
        inv.done = True
        _inflight.pop(inv.id, None)
        _send(frame)


def _cancel(fid):
    inv = _inflight.get(fid)
    if inv is None:
        return True  # finished or unknown
    cf = inv.cf
    if cf is not None and not cf.cancel() and cf.running():
        return False  # sync code holds a thread; the runtime replaces us
    inv.cancelled = inv.done = True
    _inflight.pop(fid, None)
    if inv.task is not None:
        inv.task.cancel()
    return True


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
    global _fn
    if _fn is not None:
        return _fn
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
    _fn = (main, asyncio.iscoroutinefunction(main))
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

async def _serve():
    global _loop, _loop_tid
    _loop, _loop_tid = asyncio.get_running_loop(), threading.get_ident()
    await _loop.create_unix_connection(_Conn, sock=socket.socket(fileno=3))
    ready = {"language": "python", "version": sys.version.split()[0], "pid": os.getpid()}
    _send(_frame(READY, 0, json.dumps(ready).encode()))
    await _loop.create_future()  # runs until the socket closes


if __name__ == "__main__":
    for real in (sys.__stdout__, sys.__stderr__):
        real.reconfigure(line_buffering=True)  # pass-through text reaches the runtime promptly
    sys.stdout, sys.stderr = _Capture(sys.__stdout__), _Capture(sys.__stderr__)
    asyncio.run(_serve())
