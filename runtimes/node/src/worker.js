'use strict';
// Node.js worker for opr-runtime. It speaks docs/worker-protocol.md over the
// Unix socket on fd 3, loads the user's function lazily and builds the
// `context` object of runtime-protocol §4. Plain Node, no dependencies.
// Bun runs this same file (runtimes/bun/src/worker.js links here); the few
// places where Bun differs are detected by the feature, not forked.

const net = require('net');
const fs = require('fs');
const path = require('path');
const { execFile } = require('child_process');
const { pathToFileURL } = require('url');
const { AsyncLocalStorage } = require('async_hooks');

// A standby hint (docs/worker-protocol.md): nothing to preload here, and
// not the function's business.
delete process.env.OPR_WORKER_STANDBY;

const INVOKE = 1, CANCEL = 2, CONFIGURE = 3, PING = 4;
const READY = 16, LOG = 17, RESULT = 18, CANCELLED = 19, CONFIGURED = 20, PONG = 21;
const MAX_FRAME = 64 * 1024 * 1024;
const INLINE_BODY = 64 * 1024; // bodies up to this size are copied into the frame buffer
const LOG_CHARS = 16002; // >= 8001 code points: enough for opr-runtime to cut at 8000 and say so

const sock = openChannel(3);
const als = new AsyncLocalStorage(); // current invocation, for native output
const invocations = new Map(); // id -> invocation still waiting for its RESULT
let functionDir = null, entrypoint = null, configureCount = 0;
let userFn = null, loading = null; // cached function / load in progress

// ---- the protocol socket ----------------------------------------------------

// Node adopts the socket as a net.Socket. Bun's net.Socket cannot write to an
// adopted fd (writes fail with ERR_SOCKET_CLOSED), but Bun.connect({ fd })
// can: where that API exists the socket is opened with it, behind the part of
// the net.Socket interface used here (write, destroy, data/close/error).
function openChannel(fd) {
  if (typeof Bun === 'undefined' || typeof Bun.connect !== 'function') {
    return new net.Socket({ fd, readable: true, writable: true });
  }
  const ch = new (require('events').EventEmitter)();
  let socket = null, closed = false;
  const queue = []; // bytes not written yet, in order (before open, or backpressure)
  const failed = (err) => { if (!closed) { closed = true; ch.emit('error', err); } };
  // Writes what the kernel takes; a short write waits for `drain`.
  const flush = () => {
    while (queue.length && socket !== null) {
      const buf = queue[0];
      const n = socket.write(buf);
      if (n < 0) return failed(new Error('write to the runtime socket failed'));
      if (n < buf.length) { queue[0] = buf.subarray(n); return; }
      queue.shift();
    }
  };
  ch.write = (data) => {
    if (closed) return false;
    queue.push(typeof data === 'string' ? Buffer.from(data) : data);
    if (queue.length === 1) flush();
    return queue.length === 0;
  };
  ch.destroy = () => { if (socket !== null) socket.end(); else failed(new Error('closed')); };
  Bun.connect({
    fd,
    socket: {
      open(s) { socket = s; flush(); },
      data(_s, chunk) { ch.emit('data', chunk); },
      drain() { flush(); },
      close() { if (!closed) { closed = true; ch.emit('close'); } },
      error(_s, err) { failed(err); },
    },
  }).catch(failed);
  return ch;
}

// ---- frames out ----------------------------------------------------------

function header(buf, length, kind, id) {
  buf.writeUInt32BE(length, 0);
  buf[4] = kind;
  buf.writeUInt32BE(id, 5);
}

function sendSimple(kind, id, payload) {
  const n = payload ? payload.length : 0;
  const buf = Buffer.allocUnsafe(9 + n);
  header(buf, 5 + n, kind, id);
  if (n) buf.set(payload, 9);
  sock.write(buf);
}

// LOG frame; `data` is a string (in `enc`) or bytes.
function sendLog(id, stream, data, enc) {
  if (typeof data !== 'string' && !(data instanceof Uint8Array)) data = String(data);
  const n = typeof data === 'string' ? Buffer.byteLength(data, enc) : data.length;
  if (n > MAX_FRAME - 16) { // only huge native chunks: split them across frames
    const bytes = typeof data === 'string' ? Buffer.from(data, enc) : data;
    for (let i = 0; i < n; i += MAX_FRAME / 2) sendLog(id, stream, bytes.subarray(i, i + MAX_FRAME / 2));
    return;
  }
  const buf = Buffer.allocUnsafe(10 + n);
  header(buf, 6 + n, LOG, id);
  buf[9] = stream;
  if (typeof data === 'string') buf.write(data, 10, n, enc);
  else buf.set(data, 10);
  sock.write(buf);
}

// RESULT frame: meta + body, one write for small bodies, no copy for big ones.
function sendResult(inv, meta, body) {
  if (inv.done) return; // cancelled: opr-runtime already answered
  if (typeof body === 'string' && body.length > INLINE_BODY) body = Buffer.from(body);
  const blen = body === undefined ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.length;
  if (blen > MAX_FRAME - 4096) {
    const detail = `Response body of ${blen} bytes exceeds the worker frame limit.`;
    return sendResult(inv, { status: 'invalid_output', detail });
  }
  inv.done = true;
  invocations.delete(inv.id);
  const m = JSON.stringify(meta);
  const mlen = Buffer.byteLength(m);
  const inline = blen <= INLINE_BODY;
  const buf = Buffer.allocUnsafe(13 + mlen + (inline ? blen : 0));
  header(buf, 9 + mlen + blen, RESULT, inv.id);
  buf.writeUInt32BE(mlen, 9);
  buf.write(m, 13, mlen);
  if (inline && blen) {
    if (typeof body === 'string') buf.write(body, 13 + mlen, blen);
    else buf.set(body, 13 + mlen);
  }
  sock.write(buf);
  if (!inline) sock.write(body);
}

// ---- native output ----------------------------------------------------------

// console.* ends in stream.write, so patching write catches both. Output of the
// current invocation becomes LOG stream 3; anything else goes where it always did.
function captureWrites(stream) {
  const real = stream.write;
  stream.write = function (chunk, enc, cb) {
    const inv = als.getStore();
    if (inv === undefined || inv.done || !inv.logging) return real.apply(this, arguments);
    if (typeof enc === 'function') { cb = enc; enc = undefined; }
    sendLog(inv.id, 3, chunk, enc);
    if (typeof cb === 'function') process.nextTick(cb);
    return true;
  };
  return (text) => real.call(stream, text);
}
captureWrites(process.stdout);
const realStderr = captureWrites(process.stderr);

// Bun's global console is native: it writes to fds 1 and 2 itself, past
// process.stdout/stderr. There its methods are taken from a node:console
// Console on those streams, so console output reaches the patched writes
// above (and, outside an invocation, the real streams) as it does in Node.
if (typeof Bun !== 'undefined') {
  const streamConsole = new (require('console').Console)({ stdout: process.stdout, stderr: process.stderr });
  for (const name of Object.keys(console)) {
    if (typeof console[name] === 'function' && typeof streamConsole[name] === 'function') {
      console[name] = streamConsole[name].bind(streamConsole);
    }
  }
}

// Background failures must not take the worker (and every request on it) down.
process.on('uncaughtException', (err) => realStderr(`Uncaught exception: ${errorText(err)}\n`));
process.on('unhandledRejection', (err) => realStderr(`Unhandled rejection: ${errorText(err)}\n`));

// ---- log value conversion (runtime-protocol §3.13) ------------------------

// BigInts become marked strings inside JSON.stringify, then lose their quotes.
const BIG = `\uE000big${Math.random().toString(36).slice(2)}:`;
const BIG_RE = new RegExp(`"${BIG}(-?\\d+)"`, 'g');

function safeString(v) {
  try { return String(v); } catch { return require('util').inspect(v); }
}

function errorText(e) {
  return e instanceof Error ? safeString(e.stack || e.message) : safeString(e);
}

// JSON replacer; `this[key]` is the value before toJSON ran (Buffer has one).
function replacer(key, v) {
  const raw = this[key];
  if (typeof v === 'bigint') return BIG + v;
  if (raw instanceof Uint8Array) return Array.from(raw);
  if (raw instanceof Set) return Array.from(raw);
  if (raw instanceof Map) return Object.fromEntries(raw);
  if (raw instanceof Error) return raw.stack || raw.message;
  return v;
}

function toText(v) {
  if (typeof v === 'string') return v;
  if (v === null || typeof v !== 'object') return safeString(v);
  if (v instanceof Error) return errorText(v);
  if (v instanceof Date) return isNaN(v) ? safeString(v) : v.toISOString();
  if (v instanceof URL) return v.href;
  try {
    const s = JSON.stringify(v, replacer);
    if (s === undefined) return safeString(v);
    return s.includes(BIG) ? s.replace(BIG_RE, '$1') : s;
  } catch {
    return safeString(v);
  }
}

function logLine(inv, stream, args) {
  if (inv.done || !inv.logging) return;
  let line = args.length === 1 ? toText(args[0]) : args.map(toText).join(' ');
  if (line.length > LOG_CHARS) line = line.slice(0, LOG_CHARS);
  sendLog(inv.id, stream, line);
}

// ---- context (runtime-protocol §4) -------------------------------------------

class Request {
  #body;
  constructor(meta, body) {
    this.#body = body;
    this.headers = meta.headers;
    this.method = meta.method;
    this.scheme = meta.scheme;
    this.host = meta.host;
    this.port = meta.port;
    this.path = meta.path;
    this.queryString = meta.queryString;
    this.query = meta.query;
    this.url = meta.url;
  }
  get bodyBinary() { return this.#body; }
  get bodyText() { return this.#body.toString('utf8'); } // lossy: U+FFFD for bad bytes
  get bodyRaw() { return this.bodyText; }
  get bodyJson() { return JSON.parse(this.bodyText); }
  get body() {
    const ct = (this.headers['content-type'] || 'text/plain').toLowerCase();
    if (!ct.startsWith('application/json')) return this.bodyText;
    return this.#body.length === 0 ? {} : this.bodyJson;
  }
}

// Copy of `headers` without any casing of `name`, then name = value.
function withHeader(headers, name, value) {
  const out = {};
  for (const k in headers) if (k.toLowerCase() !== name) out[k] = headers[k];
  out[name] = value;
  return out;
}

// Stateless, so one object serves every invocation.
const response = {
  text: (body, statusCode = 200, headers = {}) => ({ body: String(body), statusCode, headers }),
  binary: (bytes, statusCode = 200, headers = {}) => ({ body: bytes, statusCode, headers }),
  json: (value, statusCode = 200, headers = {}) =>
    ({ body: JSON.stringify(value), statusCode, headers: withHeader(headers, 'content-type', 'application/json') }),
  empty: () => ({ body: '', statusCode: 204, headers: {} }),
  redirect: (url, statusCode = 301, headers = {}) =>
    ({ body: '', statusCode, headers: withHeader(headers, 'location', String(url)) }),
  send: (body, statusCode = 200, headers = {}) => ({
    body: typeof body === 'string' || body instanceof Uint8Array ? body : body == null ? '' : String(body),
    statusCode, headers,
  }),
};

// ---- loading (runtime-protocol §3.10) --------------------------------------

class LoadError extends Error {
  constructor(reason, detail) { super(detail); this.reason = reason; }
}

const ESM_HINTS = /Cannot use import statement outside a module|Unexpected token 'export'|Cannot use 'import\.meta' outside a module|await is only valid in async functions/;

async function loadFunction() {
  if (!functionDir || !entrypoint) throw new LoadError('other', 'No function is configured.');
  const file = path.join(functionDir, entrypoint);
  if (!fs.existsSync(file)) throw new LoadError('missing', file);
  let mod;
  try {
    try {
      mod = require(file);
    } catch (e) {
      const esm = e && (e.code === 'ERR_REQUIRE_ESM' || e.code === 'ERR_REQUIRE_ASYNC_MODULE' ||
        (e.name === 'SyntaxError' && ESM_HINTS.test(e.message)));
      if (!esm) throw e;
      // A query after a reconfigure makes the ESM loader evaluate the file afresh.
      const url = pathToFileURL(file).href + (configureCount > 1 ? `?v=${configureCount}` : '');
      mod = await import(url);
    }
  } catch (e) {
    const built = buildMessages(e);
    if (built) throw new LoadError('syntax', built.map(buildMessageText).join('\n\n'));
    if (isCompileError(e)) throw new LoadError('syntax', await syntaxDetail(e, file));
    throw new LoadError('other', errorText(e));
  }
  const fn = mod != null && typeof mod.default === 'function' ? mod.default : mod;
  if (typeof fn !== 'function') throw new LoadError('signature', 'The module exports no function.');
  return fn;
}

// A SyntaxError from compiling code (not one thrown by e.g. JSON.parse at top
// level): Node either prefixed its stack with the source location, or it was
// raised inside Node's own module compiler.
function isCompileError(e) {
  if (!(e instanceof SyntaxError) || typeof e.stack !== 'string') return false;
  return !e.stack.startsWith('SyntaxError') || /^\s+at [^\n]*node:internal/m.test(e.stack.split('\n')[1] || '');
}

// Bun (the BuildMessage global) reports code it cannot compile as a
// BuildMessage, or an AggregateError of them when there are several.
function buildMessages(e) {
  if (typeof BuildMessage !== 'function' || e == null) return null;
  const list = e instanceof AggregateError ? e.errors : [e];
  return list.length > 0 && list.every((m) => m instanceof BuildMessage) ? list : null;
}

// Written like Node's compile errors: location, the line, a caret, message.
function buildMessageText(m) {
  const p = m.position;
  if (!p || !p.file) return `SyntaxError: ${m.message}`;
  const caret = `${' '.repeat(Math.max(0, (p.column || 1) - 1))}^`;
  return `${p.file}:${p.line}\n${p.lineText}\n${caret}\n\nSyntaxError: ${m.message}`;
}

// CommonJS compile errors carry "file:line, code, caret" in their stack; ESM
// ones do not, so ask `node --check` (only on this failure path) for the location.
async function syntaxDetail(e, file) {
  const head = e.stack.split('\n    at ')[0];
  if (!head.startsWith('SyntaxError')) return head;
  const out = await new Promise((resolve) => execFile(process.execPath, ['--check', file],
    { timeout: 5000, encoding: 'utf8' }, (err, _stdout, stderr) => resolve(err ? stderr : '')));
  const checked = out.split('\n    at ')[0].split('\n\nNode.js')[0].trim();
  return checked || head;
}

// ---- invocations ------------------------------------------------------------

function invoke(id, payload) {
  const mlen = payload.readUInt32BE(0);
  const meta = JSON.parse(payload.toString('utf8', 4, 4 + mlen));
  const inv = { id, logging: meta.logging !== false, done: false };
  invocations.set(id, inv);
  als.run(inv, run, inv, meta, payload.subarray(4 + mlen));
}

async function run(inv, meta, body) {
  let fn = userFn;
  if (fn === null) {
    // Concurrent first requests share one load; a failed load is retried next time.
    if (loading === null) {
      const p = loadFunction().finally(() => { if (loading === p) loading = null; });
      loading = p;
    }
    const gen = configureCount;
    try {
      fn = await loading;
    } catch (e) {
      if (e instanceof LoadError) return sendResult(inv, { status: 'load_error', reason: e.reason, detail: e.message });
      return sendResult(inv, { status: 'load_error', reason: 'other', detail: errorText(e) });
    }
    if (gen === configureCount) userFn = fn; // not if a CONFIGURE came in meanwhile
  }
  const context = {
    req: new Request(meta, body),
    res: response,
    log: (...args) => logLine(inv, 1, args),
    error: (...args) => logLine(inv, 2, args),
  };
  let out;
  try {
    out = fn(context);
    if (out !== null && typeof out === 'object' && typeof out.then === 'function') out = await out;
  } catch (e) {
    return sendResult(inv, { status: 'exception', message: errorText(e) });
  }
  if (out === undefined || out === null) return sendResult(inv, { status: 'missing_return' });
  if (typeof out === 'object' && isBlob(out.body)) {
    // A web Blob (or File) body: its bytes can only be read asynchronously.
    try {
      out = { ...out, body: new Uint8Array(await out.body.arrayBuffer()) };
    } catch (e) {
      return sendResult(inv, { status: 'exception', message: errorText(e) });
    }
  }
  const [resultMeta, bytes, problem] = readOutput(out);
  if (problem) return sendResult(inv, { status: 'invalid_output', detail: problem });
  sendResult(inv, resultMeta, bytes);
}

// By tag, like Headers below, without touching the global.
function isBlob(b) {
  if (b == null || typeof b !== 'object' || typeof b.arrayBuffer !== 'function') return false;
  const tag = b[Symbol.toStringTag];
  return tag === 'Blob' || tag === 'File';
}

// Turns the function's output object into RESULT meta + body (or a problem).
function readOutput(out) {
  if (typeof out !== 'object') return [null, null, `Function returned a ${typeof out}, not a response object.`];
  let body = out.body;
  if (body == null) body = undefined;
  else if (typeof body === 'number' || typeof body === 'boolean' || typeof body === 'bigint') body = String(body);
  else if (body instanceof ArrayBuffer) body = new Uint8Array(body);
  else if (typeof body !== 'string' && !(body instanceof Uint8Array)) return [null, null, 'Response body must be a string or bytes.'];
  let statusCode = out.statusCode == null ? 200 : Number(out.statusCode);
  if (!Number.isInteger(statusCode) || statusCode < 100 || statusCode > 999) {
    return [null, null, `Invalid status code: ${safeString(out.statusCode)}`];
  }
  const headers = [];
  const h = out.headers;
  if (h != null) {
    if (typeof h !== 'object' || Array.isArray(h)) return [null, null, 'Response headers must be an object.'];
    // A web Headers object (Node 18+) has no own properties: iterate it; it
    // yields each set-cookie value on its own. Tested by its tag: touching
    // the global `Headers` would load undici (9 MiB, tens of ms) in every
    // worker.
    const iterable = h instanceof Map || h[Symbol.toStringTag] === 'Headers';
    const entries = iterable ? h.entries() : Object.entries(h);
    for (const [name, value] of entries) {
      if (Array.isArray(value)) for (const v of value) headers.push([String(name), safeString(v)]);
      else if (value != null) headers.push([String(name), safeString(value)]);
    }
  }
  return [{ status: 'ok', statusCode, headers }, body, null];
}

function cancel(id) {
  const inv = invocations.get(id);
  if (inv) { inv.done = true; invocations.delete(id); }
  // A pending promise holds no thread: abandoning it is safe. (A blocked loop
  // never gets here, and opr-runtime kills the worker.)
  sendSimple(CANCELLED, id, Buffer.of(1));
}

function configure(payload) {
  const cfg = JSON.parse(payload.toString('utf8'));
  if (cfg.env) for (const k of Object.keys(cfg.env)) process.env[k] = String(cfg.env[k]);
  functionDir = cfg.functionDir || null;
  entrypoint = cfg.entrypoint || null;
  configureCount++;
  userFn = null;
  loading = null;
  // The worker itself only uses built-ins, so every other cached module is the user's.
  for (const k of Object.keys(require.cache)) if (k !== __filename) delete require.cache[k];
  sendSimple(CONFIGURED, 0);
}

// ---- frames in --------------------------------------------------------------

function onFrame(kind, id, payload) {
  switch (kind) {
    case INVOKE: return invoke(id, payload);
    case CANCEL: return cancel(id);
    case CONFIGURE: return configure(payload);
    case PING: return sendSimple(PONG, id);
    default: return undefined; // unknown kinds are ignored
  }
}

// Chunks are collected until a whole frame is there, then joined once, so a
// 20 MiB body arriving in 64 KiB pieces is not copied over and over.
let chunks = [], have = 0, need = 4;
sock.on('data', (chunk) => {
  chunks.push(chunk);
  have += chunk.length;
  if (have < need) return;
  const buf = chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, have);
  let off = 0;
  need = 4;
  while (buf.length - off >= 4) {
    const len = buf.readUInt32BE(off);
    if (len < 5 || len > MAX_FRAME) { sock.destroy(); return; }
    if (buf.length - off - 4 < len) { need = len + 4; break; }
    try {
      onFrame(buf[off + 4], buf.readUInt32BE(off + 5), buf.subarray(off + 9, off + 4 + len));
    } catch (e) { // a bad frame must not desynchronise the stream
      realStderr(`Worker failed to handle frame kind ${buf[off + 4]}: ${errorText(e)}\n`);
    }
    off += 4 + len;
  }
  chunks = off < buf.length ? [buf.subarray(off)] : [];
  have = buf.length - off;
});
sock.on('close', () => process.exit(0));
sock.on('error', () => process.exit(1));

const runtime = process.versions.bun ? { language: 'bun', version: process.versions.bun }
  : { language: 'node', version: process.versions.node };
sendSimple(READY, 0, Buffer.from(JSON.stringify({ ...runtime, pid: process.pid })));
