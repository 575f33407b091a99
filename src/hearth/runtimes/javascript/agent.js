// Hearth's in-sandbox agent for JavaScript functions (Node 18+, no npm deps; protocol in docs/protocol.md).
// Connects to the host, loads the function once, then serves invoke and batch frames. Each
// invocation's console output is captured on its own (AsyncLocalStorage), also when several run at once.
'use strict';

const fs = require('fs');
const net = require('net');
const path = require('path');
const url = require('url');
const util = require('util');
const { AsyncLocalStorage } = require('async_hooks');

const MAX_FRAME = 128 * 1024 * 1024;
const store = new AsyncLocalStorage();
let init = {};
let handler = null;

// ---- per-invocation output capture
class Capture {
  constructor(limit, requestId) {
    this.limit = limit;
    this.requestId = requestId;
    this.out = null; // { stdout: [], stderr: [] } once something is written: most calls write nothing
    this.size = null;
    this.truncated = false;
  }
  write(stream, text) {
    if (this.out === null) {
      this.out = { stdout: [], stderr: [] };
      this.size = { stdout: 0, stderr: 0 };
    }
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
    return this.out === null ? '' : this.out[stream].join('');
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
// A frame: 4-byte length, a JSON object, and optionally a newline and a payload (the encoded results).
function encode(frame, payload) {
  const json = JSON.stringify(frame);
  const body = payload === undefined ? json : json + '\n' + payload;
  const length = Buffer.byteLength(body);
  const out = Buffer.allocUnsafe(4 + length);
  out.writeUInt32BE(length, 0);
  out.write(body, 4, 'utf8');
  return out;
}

// ---- Lambda's console (the Node runtime interface client's LogPatch.js, text format): every line is
// `<ISO time>\t<request id>\t<LEVEL>\t<message>`; AWS_LAMBDA_LOG_LEVEL drops the levels below it.
const LEVELS = { TRACE: 1, DEBUG: 2, INFO: 3, WARN: 4, ERROR: 5, FATAL: 6 };

function patchConsole() {
  const wanted = LEVELS[String(process.env.AWS_LAMBDA_LOG_LEVEL || '').toUpperCase()] || LEVELS.TRACE;
  const logAt = (level) => {
    if (LEVELS[level] < wanted) return () => {};
    return (message, ...params) => {
      const capture = store.getStore();
      const requestId = capture ? capture.requestId : undefined;
      process.stdout.write(`${new Date().toISOString()}\t${requestId}\t${level}\t${util.format(message, ...params)}\n`);
    };
  };
  console.trace = logAt('TRACE');
  console.debug = logAt('DEBUG');
  console.info = logAt('INFO');
  console.log = console.info;
  console.warn = logAt('WARN');
  console.error = logAt('ERROR');
  console.fatal = logAt('FATAL');
}

// ---- errors as Lambda's Node runtime reports them (Errors.js): {errorType, errorMessage, trace}
function isErrorLike(err) {
  return util.types.isNativeError(err) || (err && typeof err.name === 'string' && typeof err.message === 'string' && typeof err.stack === 'string');
}

function describe(err) {
  if (isErrorLike(err)) {
    const stack = typeof err.stack === 'string' ? err.stack : '';
    return { type: err.name, message: err.message, traceback: stack, trace: stack.split('\n') };
  }
  let message;
  try {
    message = String(err);
  } catch (_err) {
    message = 'handled';
  }
  return { type: typeof err, message, traceback: '', trace: [] };
}

// `<label> \t{"errorType":...,"errorMessage":...,"stack":[...]}`, as the runtime logs an unhandled error.
function logError(label, err) {
  const error = err instanceof Error ? err : new Error(err);
  let formatted;
  try {
    formatted = '\t' + JSON.stringify(error, (_k, v) => {
      if (!(v instanceof Error)) return v;
      const out = Object.assign({ errorType: v.name, errorMessage: v.message, code: v.code }, v);
      if (typeof v.stack === 'string') out.stack = v.stack.split('\n');
      return out;
    });
  } catch (_err) {
    formatted = '\t' + JSON.stringify(describe(error));
  }
  console.error(label, formatted);
}

function runtimeError(name, message) {
  const err = new Error(message);
  err.name = `Runtime.${name}`;
  return err;
}

// Lambda's context: its own properties in the order its runtime gives them, callbackWaitsForEmptyEventLoop an
// accessor as there. Built as V8 keeps it a fast object with one map for all contexts: the accessor first,
// made of shared functions (its value, when set, is kept in a WeakMap), then the data properties. An object
// literal with get/set, or an accessor defined on a literal, makes a slow dictionary object every call.
function makeContext(id, timeoutMs, frame, done) {
  const deadline = Date.now() + timeoutMs;
  const context = Object.defineProperty({}, 'callbackWaitsForEmptyEventLoop', WAITS_FOR_EMPTY_EVENT_LOOP);
  context.succeed = (result) => done(null, result);
  context.fail = (err) => done(err === undefined || err === null ? 'handled' : err, null);
  context.done = (err, result) => done(err, result);
  context.functionVersion = process.env.AWS_LAMBDA_FUNCTION_VERSION;
  context.functionName = process.env.AWS_LAMBDA_FUNCTION_NAME;
  context.memoryLimitInMB = process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE;
  context.logGroupName = process.env.AWS_LAMBDA_LOG_GROUP_NAME;
  context.logStreamName = process.env.AWS_LAMBDA_LOG_STREAM_NAME;
  context.clientContext = frame.client_context === null ? undefined : frame.client_context;
  context.identity = frame.identity === null ? undefined : frame.identity;
  context.invokedFunctionArn = frame.invoked_function_arn || init.invoked_function_arn;
  context.awsRequestId = id;
  context.invocationId = id;
  context.tenantId = frame.tenant_id === null ? undefined : frame.tenant_id;
  context.getRemainingTimeInMillis = () => Math.max(0, deadline - Date.now());
  return context;
}

const waitsForEmptyEventLoop = new WeakMap();
const WAITS_FOR_EMPTY_EVENT_LOOP = {
  get() {
    return waitsForEmptyEventLoop.has(this) ? waitsForEmptyEventLoop.get(this) : true;
  },
  set(value) {
    waitsForEmptyEventLoop.set(this, value);
  },
  enumerable: true,
  configurable: true,
};

// Calls the handler as Lambda's Runtime.js does: (event, context, callback); a returned promise settles
// the call, else the callback (or context.done/succeed/fail) does. Unlike Lambda, a plain (not async)
// handler of fewer than three parameters that returns a value answers with it (Lambda answers null).
function callHandler(event, id, timeoutMs, frame) {
  return new Promise((resolve, reject) => {
    let finished = false;
    const done = (err, value) => {
      if (finished) return;
      finished = true;
      if (err !== undefined && err !== null) reject(err);
      else resolve(value);
    };
    const context = makeContext(id, timeoutMs, frame, done);
    try {
      const result = handler(event, context, done);
      if (result && typeof result.then === 'function') {
        result.then((value) => done(null, value), (err) => done(err === undefined || err === null ? 'handled' : err));
      } else if (handler.length < 3) {
        done(null, result);
      }
    } catch (err) {
      done(err === undefined || err === null ? 'handled' : err);
    }
  });
}

// [reply, the result encoded once (JSON text) or undefined]; a result that cannot be sent fails the reply.
function checked(reply, result) {
  if (!reply.ok) return [reply, undefined];
  let encoded;
  try {
    encoded = JSON.stringify(result === undefined ? null : result);
    if (encoded === undefined) encoded = 'null';
  } catch (err) {
    return [failed(reply, { type: 'ResultNotSerializable', message: err.message, traceback: '' }), undefined];
  }
  const limit = init.max_result_bytes || 6 * 1024 * 1024;
  const size = Buffer.byteLength(encoded);
  if (size > limit) {
    const message = `result of ${size} bytes is over the limit of ${limit} bytes`;
    return [failed(reply, { type: 'ResultTooLarge', message, traceback: '' }), undefined];
  }
  reply.result_bytes = size;
  return [reply, encoded];
}

function failed(reply, error) {
  reply.ok = false;
  reply.error = error;
  return reply;
}

// Runs one item; `answer` gets [reply, the encoded result or undefined]. Few promises: with
// AsyncLocalStorage on, every promise costs hook calls.
function runOne(item, timeoutMs, answer) {
  const id = String(item.id || '');
  const capture = new Capture(init.max_log_bytes || 65536, id);
  const started = process.hrtime.bigint();
  const cpu = process.cpuUsage(); // process-wide: includes concurrent invocations' work
  let ok = false;
  let outcome; // the result, or the error's description
  const settled = store.run(capture, () =>
    callHandler(item.event, id, timeoutMs, item).then(
      (result) => {
        ok = true;
        outcome = result;
      },
      (err) => {
        outcome = describe(err);
        logError('Invoke Error', err);
      },
    ),
  );
  // A tick after the call settled, as always (what the handler logs until then is its own), and outside its
  // capture (a toJSON that logs while the result is encoded writes to the sandbox's log).
  settled.then(() => answer(finished(id, ok, outcome, capture, started, cpu)));
}

// The reply of a settled call: its logs, duration and CPU time, and the result encoded. Built in the order
// of its fields, never deleting one (a `delete` turns a V8 object into a slow dictionary).
function finished(id, ok, outcome, capture, started, cpu) {
  const reply = { id, ok };
  if (!ok) reply.error = outcome;
  reply.duration_ms = Number(process.hrtime.bigint() - started) / 1e6;
  const usage = process.resourceUsage(); // CPU time and peak memory from one getrusage call
  reply.cpu_ms = (usage.userCPUTime + usage.systemCPUTime - cpu.user - cpu.system) / 1000;
  reply.max_rss_kb = usage.maxRSS;
  reply.stdout = capture.text('stdout');
  reply.stderr = capture.text('stderr');
  reply.logs_truncated = capture.truncated;
  return checked(reply, ok ? outcome : undefined);
}

// Promise-returning runOne, for the batch's loop and warm-up.
function runOneAsync(item, timeoutMs) {
  return new Promise((resolve) => runOne(item, timeoutMs, resolve));
}

// The items one after another; their results follow the frame as one payload, in order.
async function runBatch(frame) {
  const timeoutMs = frame.timeout_ms || 30000;
  const results = [];
  const encoded = [];
  for (const item of frame.items || []) {
    const [reply, result] = await runOneAsync(item, timeoutMs);
    results.push(reply);
    if (result !== undefined) encoded.push(result);
  }
  return [{ type: 'batch_result', id: frame.id, results }, encoded.join('')];
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

// ---- loading the handler as Lambda's UserFunction.js resolves it: `<module>` tried as a file, then
// `.js` (an ES module when the nearest package.json says "type": "module"), `.mjs` (import()), `.cjs`,
// then Node's own resolution from the code directory.
function hasTypeModule(folder) {
  if (folder.endsWith('/node_modules')) return false;
  const pj = path.join(folder, 'package.json');
  if (fs.existsSync(pj)) {
    try {
      const pkg = JSON.parse(fs.readFileSync(pj, 'utf8'));
      if (pkg) return pkg.type === 'module';
    } catch (err) {
      console.warn(`${pj} cannot be read, it will be ignored for ES module detection purposes.`, err);
      return false;
    }
  }
  if (folder === '/') return false;
  return hasTypeModule(path.resolve(folder, '..'));
}

async function importFile(file) {
  return await import(url.pathToFileURL(file).href);
}

async function requireUserModule(codeDir, modulePath) {
  const base = path.resolve(codeDir, modulePath);
  if (fs.existsSync(base)) return require(base);
  const isModule = fs.existsSync(base + '.js') && hasTypeModule(path.dirname(base + '.js'));
  if (!isModule && fs.existsSync(base + '.js')) return require(base + '.js');
  if (isModule) return await importFile(base + '.js');
  if (fs.existsSync(base + '.mjs')) return await importFile(base + '.mjs');
  if (fs.existsSync(base + '.cjs')) return require(base + '.cjs');
  return require(require.resolve(modulePath, { paths: [codeDir] }));
}

async function loadUserModule(codeDir, modulePath) {
  try {
    return await requireUserModule(codeDir, modulePath);
  } catch (err) {
    if (err instanceof SyntaxError) throw runtimeError('UserCodeSyntaxError', String(err));
    if (err && err.code === 'MODULE_NOT_FOUND') throw runtimeError('ImportModuleError', String(err));
    throw err;
  }
}

async function load(frame) {
  init = frame;
  writeFiles(frame.files);
  for (const [k, v] of Object.entries(frame.env || {})) process.env[k] = String(v);
  patchConsole();
  const extraPaths = Array.isArray(frame.paths) ? frame.paths.map(String) : [];
  if (extraPaths.length) {
    // Dependency layers: searched after the code's own node_modules, like NODE_PATH set at start.
    process.env.NODE_PATH = [...extraPaths, process.env.NODE_PATH].filter(Boolean).join(path.delimiter);
    require('module').Module._initPaths();
  }
  try {
    process.chdir(frame.code_dir); // fs.readFileSync('data.json') at load finds the function's files
  } catch (_err) {
    // a code directory that is not there: the module is not found below
  }
  const modulePath = String(frame.module);
  const full = `${modulePath}.${frame.function}`;
  if (full.includes('..') || modulePath.startsWith('/')) {
    throw runtimeError('MalformedHandlerName', `'${full}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`);
  }
  const mod = await loadUserModule(frame.code_dir, modulePath);
  const fn = String(frame.function).split('.').reduce((nested, key) => nested && nested[key], mod);
  if (!fn) throw runtimeError('HandlerNotFound', `${full} is undefined or not exported`);
  if (typeof fn !== 'function') throw runtimeError('HandlerNotFound', `${full} is not a function`);
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
    await load({ code_dir: dir, module: 'hearth_warm', function: 'handler', files: [{ path: file, data: Buffer.from(code).toString('base64') }] });
    for (let n = 0; n < 3; n++) encode(...(await runOneAsync({ id: String(n), event: { n, s: 'x'.repeat(100) } }, 1000)));
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
// Serves the stream; returns the function that takes what is read from it. A net.Socket made with `onread`
// hands that function its chunks itself (`reused`: in a buffer that the next read overwrites); any other
// stream's 'data' events go to it.
function serve(stream, readsInto = false) {
  let ready = false;
  const send = (frame, payload) => stream.write(encode(frame, payload));

  const onFrame = (frame) => {
    if (!ready) {
      if (frame.type === 'warm') {
        warm().then((ms) => send({ type: 'warmed', ms }), (err) => send({ type: 'warmed', error: describe(err) }));
        return;
      }
      if (frame.type !== 'init') return;
      const started = process.hrtime.bigint();
      const capture = new Capture(frame.max_log_bytes || 65536); // what the code logged while it loaded
      store.run(capture, () => load(frame)).then(
        () => {
          ready = true;
          const log = capture.text('stdout') + capture.text('stderr');
          send({ type: 'ready', init_ms: Number(process.hrtime.bigint() - started) / 1e6, log });
        },
        (err) => {
          const error = describe(err);
          store.run(capture, () => logError('Uncaught Exception', err));
          error.log = capture.text('stdout') + capture.text('stderr');
          send({ type: 'init_error', error });
        },
      );
      return;
    }
    if (frame.type === 'batch') {
      runBatch(frame).then(([reply, payload]) => send(reply, payload));
    } else if (frame.type === 'invoke') {
      runOne(frame, frame.timeout_ms || 30000, ([reply, payload]) => {
        reply.type = 'result';
        send(reply, payload);
      });
    }
  };

  // The chunks of a frame not yet whole, joined once it is (not on every chunk: a large event comes in many).
  let pending = [];
  let pendingBytes = 0;
  let needed = 0;
  const onChunk = (chunk, reused) => {
    if (pendingBytes) {
      pending.push(reused ? Buffer.from(chunk) : chunk);
      pendingBytes += chunk.length;
      if (pendingBytes < needed) return;
      chunk = Buffer.concat(pending, pendingBytes);
      pending = [];
      pendingBytes = 0;
    }
    let offset = 0;
    while (chunk.length - offset >= 4) {
      const length = chunk.readUInt32BE(offset);
      if (length > MAX_FRAME) {
        stream.destroy();
        process.exit(1);
      }
      const end = offset + 4 + length;
      if (chunk.length < end) break;
      let frame;
      try {
        frame = JSON.parse(chunk.toString('utf8', offset + 4, end));
      } catch (err) {
        process.exit(1);
      }
      offset = end;
      onFrame(frame);
    }
    if (offset < chunk.length) {
      const rest = reused ? Buffer.from(chunk.subarray(offset)) : chunk.subarray(offset);
      pending = [rest];
      pendingBytes = rest.length;
      needed = rest.length >= 4 ? 4 + rest.readUInt32BE(0) : 4;
    }
  };
  if (!readsInto) stream.on('data', (chunk) => onChunk(chunk, false));
  stream.on('close', () => process.exit(0));
  stream.on('error', () => process.exit(0));
  send({ type: 'hello', runtime: 'javascript', runtime_version: process.versions.node, pid: process.pid });
  return onChunk;
}

// A rejection or exception a handler leaves behind must not take the agent (and its other callers) down.
// Logged as Lambda's runtime logs them (which, unlike Hearth, then ends the whole runtime).
process.on('unhandledRejection', (reason) => {
  if (store.getStore()) logError('Unhandled Promise Rejection', reason);
});
process.on('uncaughtException', (err) => {
  if (store.getStore()) logError('Uncaught Exception', err);
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
    // Reads land in one buffer for the whole connection, bypassing the Readable stream's per-chunk work.
    let onChunk = null;
    const callback = (size, buffer) => onChunk(buffer.subarray(0, size), true);
    const socket = net.connect({ path: socketPath, onread: { buffer: Buffer.allocUnsafe(65536), callback } });
    socket.once('connect', () => {
      socket.setNoDelay(true);
      onChunk = serve(socket, true);
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
