// The program the sandboxed Node.js runs (`node -e <this file>`), the counterpart of boot.py.
//
// It starts, says "ready", then blocks reading ONE JSON request from stdin, runs the snippet's
// `main(inputs)` (which may be async) in a fresh V8 context and writes ONE JSON response line to
// stdout, then exits; as the sandbox's PID 1, its exit makes the kernel kill anything left.
//
// The context has the JavaScript built-ins, a captured `console`, timers, TextEncoder/Decoder,
// URL, atob/btoa and structuredClone; it has no `require`, `process`, `Buffer` or `import()`,
// so modules cannot be loaded at all. The vm module is not a security boundary (a snippet can
// reach the host context through a constructor); the sandbox around this process is.
'use strict';

const fs = require('fs');
const util = require('util');
const vm = require('vm');

const CODE_NAME = 'code.js';
const TRACEBACK_LINES = 12;
const PROTOCOL_FD = 1;

class Refused extends Error {
  constructor(kind, message) {
    super(message);
    this.kind = kind;
  }
}

function send(message) {
  const data = Buffer.from((typeof message === 'string' ? message : JSON.stringify(message)) + '\n');
  let written = 0;
  while (written < data.length) {
    written += fs.writeSync(PROTOCOL_FD, data, written);
  }
}

function readRequest() {
  const chunks = [];
  const buffer = Buffer.alloc(1 << 16);
  for (;;) {
    let count;
    try {
      count = fs.readSync(0, buffer, 0, buffer.length, null);
    } catch (error) {
      if (error.code === 'EAGAIN') continue;
      if (error.code === 'EOF') break;
      throw error;
    }
    if (count === 0) break;
    chunks.push(Buffer.from(buffer.subarray(0, count)));
  }
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

// --- print capture ------------------------------------------------------------------------------

function makeCapture() {
  const capture = { parts: [], size: 0, truncated: false, limit: 0 };
  capture.write = (...args) => {
    const data = Buffer.from(util.format(...args) + '\n');
    const room = capture.limit - capture.size;
    if (room > 0) {
      const kept = data.subarray(0, room);
      capture.parts.push(kept);
      capture.size += kept.length;
    }
    if (data.length > room) capture.truncated = true;
  };
  capture.value = () => Buffer.concat(capture.parts).toString('utf8').replace(/\uFFFD$/, '');
  return capture;
}

function makeContext(capture) {
  const log = (...args) => capture.write(...args);
  const console = { log, info: log, warn: log, error: log, debug: log, trace: log };
  const globals = {
    console,
    setTimeout,
    clearTimeout,
    setInterval,
    clearInterval,
    setImmediate,
    clearImmediate,
    queueMicrotask,
    structuredClone,
    TextEncoder,
    TextDecoder,
    URL,
    URLSearchParams,
    atob,
    btoa,
  };
  return vm.createContext(globals, { name: 'code', codeGeneration: { strings: true, wasm: false } });
}

// --- the result ---------------------------------------------------------------------------------

function describe(value) {
  if (value === undefined) return 'undefined';
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'bigint') return 'a BigInt';
  if (typeof value === 'symbol') return 'a Symbol';
  return `a ${Object.prototype.toString.call(value).slice(8, -1)}`;
}

function isPlainObject(value) {
  if (typeof value !== 'object' || value === null) return false;
  if (Object.prototype.toString.call(value) !== '[object Object]') return false;
  const proto = Object.getPrototypeOf(value);
  return proto === null || Object.getPrototypeOf(proto) === null; // this context's or another's
}

function checkValue(value, path, depth, maxDepth) {
  if (depth > maxDepth) {
    throw new Refused('bad_return_type', `${path} is nested deeper than ${maxDepth} levels`);
  }
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return;
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) {
      throw new Refused('bad_return_type', `${path} is ${value}, which JSON cannot represent`);
    }
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((item, index) => checkValue(item, `${path}[${index}]`, depth + 1, maxDepth));
    return;
  }
  if (isPlainObject(value)) {
    for (const [key, item] of Object.entries(value)) {
      checkValue(item, `${path}[${JSON.stringify(key)}]`, depth + 1, maxDepth);
    }
    return;
  }
  throw new Refused('bad_return_type', `${path} is ${describe(value)}, which is not a JSON value`);
}

function encodeOutputs(result, limits) {
  if (!isPlainObject(result)) {
    throw new Refused('bad_return_type', `main() must return an object, not ${describe(result)}`);
  }
  checkValue(result, 'the result', 1, limits.max_depth);
  const size = Buffer.byteLength(JSON.stringify(result));
  if (size > limits.output_bytes) {
    throw new Refused('output_too_large', `the result is ${size} bytes, over ${limits.output_bytes}`);
  }
  return result;
}

// --- errors -------------------------------------------------------------------------------------

function codeLine(text) {
  const match = new RegExp(`${CODE_NAME.replace('.', '\\.')}:(\\d+)`).exec(text || '');
  return match ? Number(match[1]) : null;
}

function syntaxError(error) {
  const line = codeLine(String(error.stack).split('\n')[0]);
  const where = line ? ` (line ${line})` : '';
  return { kind: 'syntax_error', message: `SyntaxError: ${error.message}${where}`, line };
}

function runtimeError(error) {
  const isError = error !== null && typeof error === 'object' && typeof error.stack === 'string';
  const name = isError ? String(error.name) : 'Error';
  const message = isError ? String(error.message) : `Uncaught ${util.inspect(error)}`;
  const frames = isError ? error.stack.split('\n').filter((l) => /^\s+at /.test(l) && l.includes(CODE_NAME)) : [];
  const summary = `${name}: ${message}`;
  const outOfMemory = name === 'RangeError' && /allocation failed/i.test(message);
  return {
    kind: outOfMemory ? 'memory_exceeded' : 'runtime_error',
    message: summary,
    error_type: name,
    line: frames.length ? codeLine(frames[0]) : null,
    traceback: [...frames.map((l) => l.trim()), summary].slice(-TRACEBACK_LINES),
  };
}

// --- running the snippet ------------------------------------------------------------------------

async function execute(request, context) {
  let script;
  try {
    const source = `${request.code}\n;(typeof main === 'function' ? main : undefined)`;
    script = new vm.Script(source, { filename: CODE_NAME });
  } catch (error) {
    return syntaxError(error);
  }
  try {
    const main = script.runInContext(context);
    if (typeof main !== 'function') throw new ReferenceError('the code defines no function main');
    const result = await main(request.inputs);
    return { kind: 'ok', outputs: encodeOutputs(result, request.limits) };
  } catch (error) {
    if (error instanceof Refused) return { kind: error.kind, message: error.message };
    return runtimeError(error);
  }
}

function finish(response, capture) {
  response.stdout = capture.value();
  response.stdout_truncated = capture.truncated;
  send(response);
  process.exit(0);
}

function boot() {
  const capture = makeCapture();
  const context = makeContext(capture); // made before the request arrives: it costs a few ms
  send('ready');
  const request = readRequest();
  capture.limit = request.limits.print_bytes;
  // A promise the snippet left rejected, or an error thrown from one of its timers.
  const fail = (error) => finish(runtimeError(error), capture);
  process.on('uncaughtException', fail);
  process.on('unhandledRejection', fail);
  execute(request, context).then(
    (response) => finish(response, capture),
    (error) => finish(runtimeError(error), capture),
  );
}

boot();
