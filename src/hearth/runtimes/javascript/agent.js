// Hearth's in-sandbox agent for JavaScript functions (Node 18+, no npm deps; protocol in docs/protocol.md).
// Connects to the host, loads the function once, then serves invoke and batch frames. Each
// invocation's console output is captured on its own (AsyncLocalStorage), also when several run at once.
'use strict';

const fs = require('fs');
const net = require('net');
const path = require('path');
const { AsyncLocalStorage } = require('async_hooks');

const MAX_FRAME = 128 * 1024 * 1024;
const store = new AsyncLocalStorage();
let init = {};
let handler = null;

// ---- per-invocation output capture
class Capture {
  constructor(limit) {
    this.limit = limit;
    this.out = { stdout: [], stderr: [] };
    this.size = { stdout: 0, stderr: 0 };
    this.truncated = false;
    this.cpuStarted = process.cpuUsage(); // process-wide: includes concurrent invocations' work
  }
  write(stream, text) {
    const room = this.limit - this.size[stream];
    if (text.length > room) {
      text = text.slice(0, Math.max(room, 0));
      this.truncated = true;
    }
    if (text) {
      this.out[stream].push(text);
      this.size[stream] += text.length;
    }
  }
  text(stream) {
    return this.out[stream].join('');
  }
}

function redirect(stream, name) {
  const original = stream.write.bind(stream);
  stream.write = (chunk, encoding, callback) => {
    const capture = store.getStore();
    if (!capture) return original(chunk, encoding, callback);
    capture.write(name, typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8'));
    if (typeof encoding === 'function') encoding();
    else if (typeof callback === 'function') callback();
    return true;
  };
}
redirect(process.stdout, 'stdout');
redirect(process.stderr, 'stderr');
// console.* write through process.stdout/stderr, which are redirected above.

// ---- framing
function encode(frame) {
  const body = Buffer.from(JSON.stringify(frame), 'utf8');
  const header = Buffer.alloc(4);
  header.writeUInt32BE(body.length, 0);
  return Buffer.concat([header, body]);
}

function describe(err) {
  if (err instanceof Error) {
    return { type: err.name || (err.constructor && err.constructor.name) || 'Error', message: err.message, traceback: err.stack || '' };
  }
  return { type: 'HandlerError', message: String(err), traceback: '' };
}

function makeContext(id, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  return {
    functionName: init.function_name,
    functionVersion: String(init.function_version),
    memoryLimitInMB: init.memory_limit_in_mb,
    invocationId: id,
    awsRequestId: id,
    getRemainingTimeInMillis: () => Math.max(0, deadline - Date.now()),
    callbackWaitsForEmptyEventLoop: false,
  };
}

function callHandler(event, context) {
  if (handler.length >= 3) {
    return new Promise((resolve, reject) => {
      const done = (err, value) => (err ? reject(err) : resolve(value));
      try {
        const maybe = handler(event, context, done);
        if (maybe && typeof maybe.then === 'function') maybe.then(resolve, reject);
      } catch (err) {
        reject(err);
      }
    });
  }
  return Promise.resolve().then(() => handler(event, context));
}

function checked(reply) {
  if (!reply.ok) return reply;
  let encoded;
  try {
    encoded = JSON.stringify(reply.result === undefined ? null : reply.result);
    if (encoded === undefined) encoded = 'null';
  } catch (err) {
    delete reply.result;
    return Object.assign(reply, { ok: false, error: { type: 'ResultNotSerializable', message: err.message, traceback: '' } });
  }
  const limit = init.max_result_bytes || 6 * 1024 * 1024;
  if (Buffer.byteLength(encoded) > limit) {
    delete reply.result;
    const message = `result of ${Buffer.byteLength(encoded)} bytes is over the limit of ${limit} bytes`;
    return Object.assign(reply, { ok: false, error: { type: 'ResultTooLarge', message, traceback: '' } });
  }
  reply.result = JSON.parse(encoded);
  return reply;
}

async function runOne(item, timeoutMs) {
  const capture = new Capture(init.max_log_bytes || 65536);
  const started = process.hrtime.bigint();
  const id = String(item.id || '');
  let reply;
  await store.run(capture, async () => {
    try {
      const result = await callHandler(item.event, makeContext(id, timeoutMs));
      reply = { id, ok: true, result };
    } catch (err) {
      reply = { id, ok: false, error: describe(err) };
    }
  });
  reply.duration_ms = Number(process.hrtime.bigint() - started) / 1e6;
  const cpu = process.cpuUsage(capture.cpuStarted);
  reply.cpu_ms = (cpu.user + cpu.system) / 1000;
  reply.max_rss_kb = process.resourceUsage().maxRSS;
  reply.stdout = capture.text('stdout');
  reply.stderr = capture.text('stderr');
  reply.logs_truncated = capture.truncated;
  return checked(reply);
}

async function runBatch(frame) {
  const items = frame.items || [];
  const timeoutMs = frame.timeout_ms || 30000;
  if (frame.batch_handler) {
    const one = await runOne({ id: frame.id, event: items.map((i) => i.event) }, timeoutMs);
    let results;
    if (one.ok && Array.isArray(one.result) && one.result.length === items.length) {
      results = items.map((item, k) => ({ id: item.id, ok: true, result: one.result[k] }));
    } else {
      const error = one.error || { type: 'BatchResultMismatch', message: `batch handler must return a list of ${items.length} results` };
      results = items.map((item) => ({ id: item.id, ok: false, error }));
    }
    results.forEach((r) => { r.duration_ms = one.duration_ms; r.stdout = ''; r.stderr = ''; r.logs_truncated = false; });
    if (results.length) Object.assign(results[0], { stdout: one.stdout, stderr: one.stderr, logs_truncated: one.logs_truncated });
    return { type: 'batch_result', id: frame.id, results };
  }
  const results = [];
  for (const item of items) results.push(await runOne(item, timeoutMs));
  return { type: 'batch_result', id: frame.id, results };
}

// Files an init frame carries (microVMs share no directory with the host): [{path, data (base64), mode}].
function writeFiles(files) {
  for (const item of files || []) {
    const file = String(item.path);
    if (!file.startsWith('/') || file.split('/').includes('..')) throw new Error(`invalid file path ${file}`);
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, Buffer.from(String(item.data), 'base64'), { mode: (item.mode || 0o644) & 0o755 });
  }
}

function load(frame) {
  init = frame;
  writeFiles(frame.files);
  for (const [k, v] of Object.entries(frame.env || {})) process.env[k] = String(v);
  process.env.AWS_LAMBDA_FUNCTION_NAME = String(frame.function_name || '');
  process.env.AWS_LAMBDA_FUNCTION_VERSION = String(frame.function_version || '');
  process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE = String(frame.memory_limit_in_mb || '');
  const extraPaths = Array.isArray(frame.paths) ? frame.paths.map(String) : [];
  if (extraPaths.length) {
    // Dependency layers: searched after the code's own node_modules, like NODE_PATH set at start.
    process.env.NODE_PATH = [...extraPaths, process.env.NODE_PATH].filter(Boolean).join(path.delimiter);
    require('module').Module._initPaths();
  }
  const modulePath = String(frame.module);
  if (modulePath.startsWith('/') || modulePath.split('/').includes('..')) {
    throw new Error(`invalid module path ${modulePath}`);
  }
  const file = path.join(frame.code_dir, modulePath + '.js');
  if (!fs.existsSync(file)) {
    const err = new Error(`no module '${modulePath}' in the function's code`);
    err.name = 'ModuleNotFoundError';
    throw err;
  }
  const mod = require(file);
  const fn = mod[frame.function];
  if (fn === undefined) {
    const err = new Error(`module '${modulePath}' has no export '${frame.function}'`);
    err.name = 'HandlerNotFound';
    throw err;
  }
  if (typeof fn !== 'function') {
    const err = new TypeError(`handler '${frame.function}' is not a function`);
    throw err;
  }
  handler = fn;
}

// Answers the host's optional `warm` frame (before init, docs/protocol.md): loads a throwaway function
// and runs it a few times, so that a microVM restored under TCG has translated the agent's code paths
// before the real function loads. Leaves no trace (module cache, globals, environment, files).
async function warm() {
  const started = process.hrtime.bigint();
  const dir = `/tmp/.hearth-warm-${process.pid}`;
  const file = path.join(dir, 'hearth_warm.js');
  const saved = { init, handler, env: { ...process.env } };
  const code = 'exports.handler = async (event) => { console.log(event); return { echo: event }; };\n';
  try {
    load({ code_dir: dir, module: 'hearth_warm', function: 'handler', files: [{ path: file, data: Buffer.from(code).toString('base64') }] });
    for (let n = 0; n < 3; n++) encode(await runOne({ id: String(n), event: { n, s: 'x'.repeat(100) } }, 1000));
  } finally {
    delete require.cache[file];
    init = saved.init;
    handler = saved.handler;
    for (const key of Object.keys(process.env)) if (!(key in saved.env)) delete process.env[key];
    Object.assign(process.env, saved.env);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return Number(process.hrtime.bigint() - started) / 1e6;
}

// ---- connection
function serve(stream) {
  let buffer = Buffer.alloc(0);
  let ready = false;
  const send = (frame) => stream.write(encode(frame));

  const onFrame = (frame) => {
    if (!ready) {
      if (frame.type === 'warm') {
        warm().then((ms) => send({ type: 'warmed', ms }), (err) => send({ type: 'warmed', error: describe(err) }));
        return;
      }
      if (frame.type !== 'init') return;
      const started = process.hrtime.bigint();
      try {
        load(frame);
      } catch (err) {
        send({ type: 'init_error', error: describe(err) });
        return;
      }
      ready = true;
      send({ type: 'ready', init_ms: Number(process.hrtime.bigint() - started) / 1e6 });
      return;
    }
    if (frame.type === 'batch') {
      runBatch(frame).then(send);
    } else if (frame.type === 'invoke') {
      runOne(frame, frame.timeout_ms || 30000).then((reply) => send(Object.assign({ type: 'result' }, reply)));
    }
  };

  stream.on('data', (chunk) => {
    buffer = buffer.length ? Buffer.concat([buffer, chunk]) : chunk;
    while (buffer.length >= 4) {
      const length = buffer.readUInt32BE(0);
      if (length > MAX_FRAME) {
        stream.destroy();
        process.exit(1);
      }
      if (buffer.length < 4 + length) break;
      const body = buffer.subarray(4, 4 + length);
      buffer = buffer.subarray(4 + length);
      let frame;
      try {
        frame = JSON.parse(body.toString('utf8'));
      } catch (err) {
        process.exit(1);
      }
      onFrame(frame);
    }
  });
  stream.on('close', () => process.exit(0));
  stream.on('error', () => process.exit(0));
  send({ type: 'hello', runtime: 'javascript', runtime_version: process.versions.node, pid: process.pid });
}

// A rejection or exception a handler leaves behind must not take the agent (and its other callers) down.
process.on('unhandledRejection', (reason) => {
  const capture = store.getStore();
  const text = `Unhandled rejection: ${reason && reason.stack ? reason.stack : String(reason)}\n`;
  if (capture) capture.write('stderr', text);
});
process.on('uncaughtException', (err) => {
  const capture = store.getStore();
  const text = `Uncaught exception: ${err && err.stack ? err.stack : String(err)}\n`;
  if (capture) capture.write('stderr', text);
});

function connect() {
  const port = process.env.HEARTH_AGENT_PORT;
  const inherited = process.env.HEARTH_AGENT_FD; // Firecracker microVMs: a vsock connection, already open
  if (port || inherited) {
    const fd = inherited ? Number(inherited) : fs.openSync(port, 'r+');
    const reader = fs.createReadStream(null, { fd, autoClose: false });
    const writer = fs.createWriteStream(null, { fd, autoClose: false });
    const duplex = { write: (b) => writer.write(b), on: (ev, fn) => reader.on(ev === 'close' ? 'end' : ev, fn), destroy: () => reader.destroy() };
    serve(duplex);
    return;
  }
  const socketPath = process.env.HEARTH_AGENT_SOCKET || '/hearth/agent.sock';
  const deadline = Date.now() + 5000;
  const attempt = () => {
    const socket = net.connect(socketPath);
    socket.once('connect', () => {
      socket.setNoDelay(true);
      serve(socket);
    });
    socket.once('error', (err) => {
      if (Date.now() > deadline) {
        process.stderr.write(`hearth agent: cannot connect to ${socketPath}: ${err.message}\n`);
        process.exit(1);
      }
      setTimeout(attempt, 5);
    });
  };
  attempt();
}

connect();
