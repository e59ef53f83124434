'use strict';
/*
 * Stratus Node.js runtime: a Lambda Runtime API (2018-06-01) client.
 *
 * Behaves like AWS's Node.js runtime interface client as far as function code
 * and the invoker can see: handler resolution (CommonJS and ESM), async and
 * callback handlers, context object, console log format, error documents
 * ({"errorType","errorMessage","trace"}), and response streaming: the
 * global `awslambda.streamifyResponse(handler)` marks a handler
 * `(event, responseStream, context)` whose writes go to the Runtime API as
 * they happen (a chunked POST in streaming mode; an error after the stream
 * began goes in the trailers), and `awslambda.HttpResponseStream.from(stream,
 * {statusCode, headers, cookies})` opens the stream with the http-integration
 * prelude (JSON, then eight NUL bytes) that function URLs turn into the
 * HTTP status and headers.
 *
 * Run as:  /usr/bin/node /var/runtime/node/bootstrap.js
 *
 * Pre-initialised (the sandbox backend's runtime pool): started with
 * _STRATUS_PREINIT_FD=<n> and no function yet, it loads its modules, then
 * blocks reading descriptor n until EOF: one JSON document
 * {"env": {...}, "cwd": "/var/task"} with the function's environment. From
 * there on it is the same as a runtime started for that function.
 */

const http = require('http');
const path = require('path');
const fs = require('fs');
const util = require('util');
const Module = require('module');

const API_PREFIX = '/2018-06-01/runtime';
const ERROR_TYPE_HEADER = 'Lambda-Runtime-Function-Error-Type';

// ---------------------------------------------------------------------------
// Runtime API client: one keep-alive connection.
// ---------------------------------------------------------------------------

let runtimeApi = '';
let apiHost = '';
let apiPort = 80;
function setRuntimeApi(address) {
  runtimeApi = address || '';
  const sepIdx = runtimeApi.lastIndexOf(':');
  apiHost = sepIdx > 0 ? runtimeApi.slice(0, sepIdx).replace(/^\[|\]$/g, '') : runtimeApi;
  apiPort = sepIdx > 0 ? Number(runtimeApi.slice(sepIdx + 1)) : 80;
}
setRuntimeApi(process.env.AWS_LAMBDA_RUNTIME_API);
const agent = new http.Agent({ keepAlive: true, maxSockets: 1, noDelay: true });

function apiRequest(method, urlPath, body, headers) {
  return new Promise((resolve, reject) => {
    const opts = {
      host: apiHost,
      port: apiPort,
      method,
      path: API_PREFIX + urlPath,
      agent,
      headers: Object.assign({}, headers || {}),
    };
    if (body !== undefined) opts.headers['Content-Length'] = Buffer.byteLength(body);
    const req = http.request(opts, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      res.on('error', reject);
    });
    req.setNoDelay(true);
    req.on('error', reject);
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

// ---------------------------------------------------------------------------
// Errors (names and messages as AWS's runtime reports them)
// ---------------------------------------------------------------------------

function runtimeErrorClass(name) {
  const C = class extends Error {
    constructor(arg) {
      super(arg instanceof Error ? String(arg) : arg);
      this.name = name;
      if (arg instanceof Error && arg.stack) {
        this.stack = `${name}: ${this.message}\n${arg.stack.split('\n').slice(1).join('\n')}`;
      }
    }
  };
  Object.defineProperty(C, 'name', { value: name });
  return C;
}
const ImportModuleError = runtimeErrorClass('Runtime.ImportModuleError');
const HandlerNotFound = runtimeErrorClass('Runtime.HandlerNotFound');
const MalformedHandlerName = runtimeErrorClass('Runtime.MalformedHandlerName');
const UserCodeSyntaxError = runtimeErrorClass('Runtime.UserCodeSyntaxError');
const UnhandledPromiseRejection = runtimeErrorClass('Runtime.UnhandledPromiseRejection');

function isErrorLike(e) {
  return e instanceof Error || util.types.isNativeError(e) ||
    (e && typeof e === 'object' && typeof e.name === 'string' && typeof e.message === 'string');
}

function toErrorDocument(error) {
  try {
    if (isErrorLike(error)) {
      const stack = typeof error.stack === 'string' ? error.stack : `${error.name}: ${error.message}`;
      return {
        errorType: String(error.name).replace(/\x7F/g, '%7F'),
        errorMessage: String(error.message).replace(/\x7F/g, '%7F'),
        trace: stack.replace(/\x7F/g, '%7F').split('\n'),
      };
    }
    return { errorType: typeof error, errorMessage: String(error), trace: [] };
  } catch (_e) {
    return {
      errorType: 'handled',
      errorMessage: 'callback called with Error argument, but there was a problem while retrieving one or more of its message, name, and stack',
    };
  }
}

function errorTypeHeader(doc) {
  // Header values must be plain ASCII without control characters.
  return String(doc.errorType || 'Unhandled').replace(/[^\x20-\x7E]/g, '') || 'Unhandled';
}

// ---------------------------------------------------------------------------
// Logging: console.* -> "<ISO time>\t<request id>\t<LEVEL>\t<message>" on stdout
// ---------------------------------------------------------------------------

let currentRequestId = undefined;

function patchConsole() {
  const write = (level) => (...args) => {
    const msg = util.format(...args).replace(/\n/g, '\r');
    process.stdout.write(`${new Date().toISOString()}\t${currentRequestId}\t${level}\t${msg}\n`);
  };
  console.log = write('INFO');
  console.info = write('INFO');
  console.warn = write('WARN');
  console.error = write('ERROR');
  console.debug = write('DEBUG');
  console.trace = write('TRACE');
  console.fatal = write('FATAL');
}

function logError(label, doc) {
  const parts = [`${new Date().toISOString()}\t${currentRequestId}\tERROR\t${label} \t`];
  let text;
  try {
    text = JSON.stringify(doc);
  } catch (_e) {
    text = String(doc);
  }
  process.stdout.write(parts[0] + text + '\n');
}

// ---------------------------------------------------------------------------
// Handler resolution
// ---------------------------------------------------------------------------

const FUNCTION_EXPR = /^([^.]*)\.(.*)$/;
const RELATIVE_PATH_SUBSTRING = '..';

function setNodePath(taskRoot) {
  const extra = ['/opt/nodejs/node20/node_modules', '/opt/nodejs/node_modules', taskRoot];
  const current = (process.env.NODE_PATH || '').split(':').filter(Boolean);
  const merged = current.concat(extra.filter((p) => !current.includes(p)));
  process.env.NODE_PATH = merged.join(':');
  Module._initPaths();
}

function resolveHandlerPath(obj, handlerPath) {
  return handlerPath.split('.').reduce((nested, key) => (nested && nested[key]), obj);
}

async function loadModule(appRoot, moduleRoot, moduleName) {
  const base = path.resolve(appRoot, moduleRoot, moduleName);
  const isFile = (p) => {
    try {
      return fs.statSync(p).isFile();
    } catch (_e) {
      return false;
    }
  };
  const { pathToFileURL } = require('url');
  if (isFile(base + '.mjs')) return import(pathToFileURL(base + '.mjs').href);
  if (isFile(base + '.cjs')) return require(base + '.cjs');
  if (isFile(base + '.js')) {
    try {
      return require(base + '.js');
    } catch (e) {
      if (e && (e.code === 'ERR_REQUIRE_ESM' || e.code === 'ERR_REQUIRE_ASYNC_MODULE')) {
        return import(pathToFileURL(base + '.js').href);
      }
      throw e;
    }
  }
  // Not a file in the task: a package name (node_modules, NODE_PATH, /opt).
  let resolved;
  try {
    resolved = require.resolve(moduleName, { paths: [path.resolve(appRoot, moduleRoot), appRoot] });
  } catch (_e) {
    resolved = undefined;
  }
  if (resolved) {
    if (resolved.endsWith('.mjs')) return import(pathToFileURL(resolved).href);
    try {
      return require(resolved);
    } catch (e) {
      if (e && e.code === 'ERR_REQUIRE_ESM') return import(pathToFileURL(resolved).href);
      throw e;
    }
  }
  // Let Node produce its usual "Cannot find module 'x'" error, as AWS's does.
  return require(moduleName);
}

async function loadHandler(appRoot, fullHandler) {
  if (fullHandler.includes(RELATIVE_PATH_SUBSTRING)) {
    throw new MalformedHandlerName(`'${fullHandler}' is not a valid handler name. Use absolute paths when specifying root directories in handler names.`);
  }
  const slash = fullHandler.lastIndexOf('/');
  const moduleRoot = slash >= 0 ? fullHandler.slice(0, slash) : '';
  const handlerString = slash >= 0 ? fullHandler.slice(slash + 1) : fullHandler;
  const match = handlerString.match(FUNCTION_EXPR);
  if (!match || match.length !== 3) {
    throw new MalformedHandlerName('Bad handler');
  }
  const [, moduleName, handlerPath] = match;
  let mod;
  try {
    mod = await loadModule(appRoot, moduleRoot, moduleName);
  } catch (e) {
    if (e instanceof SyntaxError) throw new UserCodeSyntaxError(e);
    if (e && (e.code === 'MODULE_NOT_FOUND' || e.code === 'ERR_MODULE_NOT_FOUND')) throw new ImportModuleError(e);
    throw e;
  }
  let fn = resolveHandlerPath(mod, handlerPath);
  if (fn === undefined && mod && mod.default && typeof mod.default === 'object') {
    // ESM namespace of a CommonJS module imported via import(): exports live on default.
    fn = resolveHandlerPath(mod.default, handlerPath);
  }
  if (fn === undefined || fn === null) {
    throw new HandlerNotFound(`${fullHandler} is undefined or not exported`);
  }
  if (typeof fn !== 'function') {
    throw new HandlerNotFound(`${fullHandler} is not a function`);
  }
  return fn;
}

// ---------------------------------------------------------------------------
// Response streaming (awslambda.streamifyResponse / HttpResponseStream)
// ---------------------------------------------------------------------------

const HANDLER_STREAMING = Symbol.for('aws.lambda.runtime.handler.streaming');
const HTTP_INTEGRATION = 'application/vnd.awslambda.http-integration-response';
const ERROR_BODY_TRAILER = 'Lambda-Runtime-Function-Error-Body';

class InvalidStreamingOperation extends Error {
  constructor(message) {
    super(message);
    this.name = 'Runtime.InvalidStreamingOperation';
  }
}

class HttpResponseStream {
  // Writes the prelude (JSON, then 8 NUL bytes) before the first byte of the body.
  static from(stream, prelude) {
    stream.setContentType(HTTP_INTEGRATION);
    const json = JSON.stringify(prelude || {});
    stream._onBeforeFirstWrite = (write) => {
      write(json);
      write(new Uint8Array(8));
    };
    return stream;
  }
}

globalThis.awslambda = Object.assign(globalThis.awslambda || {}, {
  streamifyResponse(handler, options) {
    handler[HANDLER_STREAMING] = 'response';
    if (options && typeof options.highWaterMark === 'number') handler.streamHighWaterMark = options.highWaterMark;
    return handler;
  },
  HttpResponseStream,
});

// The response stream of one invocation: a chunked POST to /response in
// streaming mode. `done` settles when the Runtime API has answered.
function createResponseStream(requestId) {
  const req = http.request({
    host: apiHost,
    port: apiPort,
    method: 'POST',
    path: `${API_PREFIX}/invocation/${encodeURIComponent(requestId)}/response`,
    agent,
    headers: {
      'Lambda-Runtime-Function-Response-Mode': 'streaming',
      'Transfer-Encoding': 'chunked',
      Trailer: `${ERROR_TYPE_HEADER}, ${ERROR_BODY_TRAILER}`,
      'Content-Type': 'application/octet-stream',
    },
  });
  req.setNoDelay(true);
  const done = new Promise((resolve) => {
    req.on('response', (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode, body: Buffer.concat(chunks) }));
      res.on('error', (e) => resolve({ error: e }));
    });
    req.on('error', (e) => resolve({ error: e }));
  });
  let started = false;
  const origWrite = req.write.bind(req);
  const origEnd = req.end.bind(req);
  const begin = () => {
    if (started) return;
    started = true;
    if (typeof req._onBeforeFirstWrite === 'function') req._onBeforeFirstWrite((c) => origWrite(c));
  };
  req.setContentType = (contentType) => {
    if (started) throw new InvalidStreamingOperation('Cannot set content-type, too late.');
    req.setHeader('Content-Type', contentType);
  };
  req.write = (chunk, encoding, callback) => {
    if (typeof chunk !== 'string' && !Buffer.isBuffer(chunk) && !(chunk instanceof Uint8Array)) {
      chunk = JSON.stringify(chunk);
    }
    begin();
    return origWrite(chunk, encoding, callback);
  };
  req.end = (chunk, encoding, callback) => {
    if (typeof chunk === 'function') {
      callback = chunk;
      chunk = undefined;
    } else if (typeof encoding === 'function') {
      callback = encoding;
      encoding = undefined;
    }
    if (chunk !== undefined && chunk !== null) req.write(chunk, encoding);
    begin();
    return origEnd(callback);
  };
  // An error after the stream began: in the trailers, the document in base64.
  const fail = (error) => {
    const doc = toErrorDocument(error);
    logError('Invoke Error', Object.assign({ errorType: doc.errorType, errorMessage: doc.errorMessage }, doc.trace ? { stack: doc.trace } : {}));
    if (req.writableEnded) return;
    begin();
    req.addTrailers({
      [ERROR_TYPE_HEADER]: errorTypeHeader(doc),
      [ERROR_BODY_TRAILER]: Buffer.from(JSON.stringify(doc)).toString('base64'),
    });
    origEnd();
  };
  return { stream: req, done, fail };
}

async function runStreamingInvocation(handler, headers, body) {
  const requestId = headers['lambda-runtime-aws-request-id'] || '';
  const { stream, done, fail } = createResponseStream(requestId);
  let context;
  let event;
  try {
    context = makeContext(headers, () => {});
    event = body.length ? JSON.parse(body.toString('utf8')) : {};
  } catch (e) {
    const err = new Error(`Unable to parse invocation: ${e && e.message}`);
    err.name = 'Runtime.UnmarshalError';
    fail(err);
    await done;
    return;
  }
  try {
    const ret = handler(event, stream, context);
    if (!ret || typeof ret.then !== 'function') {
      fail(new InvalidStreamingOperation('Streaming does not support non-async handlers.'));
    } else {
      const result = await ret;
      if (result !== undefined) console.warn('Streaming handlers ignore return values.');
    }
  } catch (e) {
    fail(e === undefined || e === null ? new Error(String(e)) : e);
  }
  const res = await done;
  if (res.error) {
    process.stderr.write(`Stratus runtime: streaming response of ${requestId} failed: ${res.error}\n`);
  } else if (res.status !== 202) {
    process.stderr.write(`Stratus runtime: Runtime API answered ${res.status} for streamed response of ${requestId}: ${res.body.toString().slice(0, 1000)}\n`);
  }
}

// ---------------------------------------------------------------------------
// Invocation
// ---------------------------------------------------------------------------

let invocationInProgress = false;
let currentInvokeId = undefined;

async function postInitError(error) {
  const doc = toErrorDocument(error);
  logError('Uncaught Exception', Object.assign({ errorType: doc.errorType, errorMessage: doc.errorMessage }, doc.trace ? { stack: doc.trace } : {}));
  try {
    await apiRequest('POST', '/init/error', JSON.stringify(doc), {
      'Content-Type': 'application/json',
      [ERROR_TYPE_HEADER]: errorTypeHeader(doc),
    });
  } catch (e) {
    process.stderr.write(`Stratus runtime: failed to post init error: ${e}\n`);
  }
}

async function postError(requestId, error) {
  const doc = toErrorDocument(error);
  logError('Invoke Error', Object.assign({ errorType: doc.errorType, errorMessage: doc.errorMessage }, doc.trace ? { stack: doc.trace } : {}));
  const res = await apiRequest('POST', `/invocation/${encodeURIComponent(requestId)}/error`, JSON.stringify(doc), {
    'Content-Type': 'application/json',
    [ERROR_TYPE_HEADER]: errorTypeHeader(doc),
  });
  if (res.status !== 202) {
    process.stderr.write(`Stratus runtime: Runtime API answered ${res.status} for error of ${requestId}: ${res.body.toString().slice(0, 1000)}\n`);
  }
}

async function postResponse(requestId, result) {
  let body;
  try {
    body = JSON.stringify(result === undefined ? null : result);
    if (body === undefined) body = 'null';
  } catch (e) {
    const err = new Error(`Unable to stringify response body: ${e && e.message}`);
    err.name = 'Runtime.MarshalError';
    return postError(requestId, err);
  }
  const res = await apiRequest('POST', `/invocation/${encodeURIComponent(requestId)}/response`, body, {
    'Content-Type': 'application/json',
  });
  if (res.status !== 202) {
    process.stderr.write(`Stratus runtime: Runtime API answered ${res.status} for response of ${requestId}: ${res.body.toString().slice(0, 1000)}\n`);
  }
}

function makeContext(headers, finish) {
  const deadline = Number(headers['lambda-runtime-deadline-ms'] || 0);
  const parse = (h) => {
    if (!h) return undefined;
    return JSON.parse(h);
  };
  const env = process.env;
  const context = {
    callbackWaitsForEmptyEventLoop: true,
    functionName: env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: env.AWS_LAMBDA_FUNCTION_VERSION,
    invokedFunctionArn: headers['lambda-runtime-invoked-function-arn'],
    memoryLimitInMB: env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    awsRequestId: headers['lambda-runtime-aws-request-id'],
    logGroupName: env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: env.AWS_LAMBDA_LOG_STREAM_NAME,
    clientContext: parse(headers['lambda-runtime-client-context']),
    identity: parse(headers['lambda-runtime-cognito-identity']),
    getRemainingTimeInMillis() {
      return Math.max(deadline - Date.now(), 0);
    },
    // Legacy completion methods.
    done(err, result) {
      finish(err, result);
    },
    succeed(result) {
      finish(null, result);
    },
    fail(err) {
      finish(err === undefined || err === null ? 'handled' : err, undefined);
    },
  };
  if (headers['lambda-runtime-aws-tenant-id']) context.tenantId = headers['lambda-runtime-aws-tenant-id'];
  return context;
}

// What to do when the event loop empties during an invocation (as AWS's
// runtime does with a 'beforeExit' listener): by default post null (a handler
// that neither returned a promise nor called back); after callback() with
// callbackWaitsForEmptyEventLoop=true, post the callback's outcome.
let beforeExitAction = null;
process.on('beforeExit', () => {
  const action = beforeExitAction;
  beforeExitAction = null;
  if (action) action();
});

function runInvocation(handler, headers, body) {
  return new Promise((resolve) => {
    const requestId = headers['lambda-runtime-aws-request-id'] || '';
    let finished = false;
    const finish = (err, result) => {
      if (finished) return;
      finished = true;
      beforeExitAction = null;
      const p = (err !== undefined && err !== null) ? postError(requestId, err) : postResponse(requestId, result);
      p.then(resolve, (e) => {
        // e.g. the server refused an oversized response and closed the
        // connection: the invoker already has its answer; carry on.
        process.stderr.write(`Stratus runtime: failed to post outcome of ${requestId}: ${e}\n`);
        resolve();
      });
    };
    beforeExitAction = () => finish(null, null);
    let context;
    let event;
    try {
      context = makeContext(headers, finish);
      const ctype = headers['content-type'];
      if (ctype && ctype !== 'application/json') {
        event = body;
      } else {
        event = body.length ? JSON.parse(body.toString('utf8')) : {};
      }
    } catch (e) {
      const err = new Error(`Unable to parse invocation: ${e && e.message}`);
      err.name = 'Runtime.UnmarshalError';
      finish(err);
      return;
    }
    let called = false;
    const callback = (err, result) => {
      if (called || finished) return;
      called = true;
      if (context.callbackWaitsForEmptyEventLoop) {
        beforeExitAction = () => finish(err, result);
      } else {
        finish(err, result);
      }
    };
    let ret;
    try {
      ret = handler(event, context, callback);
    } catch (e) {
      finish(e);
      return;
    }
    if (ret && typeof ret.then === 'function') {
      ret.then((r) => finish(null, r), (e) => finish(e === undefined || e === null ? new Error(String(e)) : e));
    }
    // Otherwise (as on AWS) the return value of a non-async handler is
    // ignored: the outcome comes from callback()/context.succeed|fail|done, or
    // is null once the event loop is empty.
  });
}

const PREINIT_FD_ENV = '_STRATUS_PREINIT_FD';

// Pre-initialised: load what every function needs, then wait (blocking:
// nothing else runs yet) for this sandbox's function and take its
// environment.
// Node's first HTTP request costs 10-30 ms of lazy initialisation here:
// make one ahead of time, to a throwaway server on the sandbox's loopback.
function warmHttp() {
  return new Promise((resolve) => {
    const server = http.createServer((req, res) => {
      req.resume();
      res.setHeader('Content-Type', 'application/json');
      res.end('{}');
    });
    const done = () => {
      server.close();
      resolve();
    };
    server.on('error', done);
    server.listen(0, '127.0.0.1', () => {
      const warmAgent = new http.Agent({ keepAlive: false });
      const req = http.request({
        host: '127.0.0.1',
        port: server.address().port,
        method: 'POST',
        path: '/warm',
        agent: warmAgent,
        headers: { 'Content-Type': 'application/json', 'Content-Length': 2 },
      }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => {
          JSON.parse(Buffer.concat(chunks).toString('utf8'));
          warmAgent.destroy();
          done();
        });
      });
      req.setNoDelay(true);
      req.on('error', done);
      req.end('{}');
    });
  });
}

async function waitForFunction(fd) {
  require('url');
  await warmHttp();
  let raw;
  try {
    raw = fs.readFileSync(fd);
  } finally {
    try {
      fs.closeSync(fd);
    } catch (_e) {
      // already closed
    }
  }
  if (!raw.length) {
    // The sandbox was discarded before it got a function.
    process.exit(0);
  }
  const spec = JSON.parse(raw.toString('utf8'));
  for (const k of Object.keys(process.env)) delete process.env[k];
  Object.assign(process.env, spec.env);
  setRuntimeApi(process.env.AWS_LAMBDA_RUNTIME_API);
  try {
    process.chdir(spec.cwd || '/var/task');
  } catch (_e) {
    // keep cwd
  }
}

async function main() {
  const preinitFd = process.env[PREINIT_FD_ENV];
  if (preinitFd !== undefined) await waitForFunction(Number(preinitFd));
  const taskRoot = process.env.LAMBDA_TASK_ROOT || '/var/task';
  const handlerName = process.argv[2] || process.env._HANDLER || '';
  if (!runtimeApi) {
    process.stderr.write('Stratus runtime: AWS_LAMBDA_RUNTIME_API is not set\n');
    process.exit(1);
  }
  try {
    process.chdir(taskRoot);
  } catch (_e) {
    // keep cwd
  }
  setNodePath(taskRoot);
  patchConsole();

  process.on('uncaughtException', (err) => {
    const doc = err;
    if (invocationInProgress && currentInvokeId !== undefined) {
      postError(currentInvokeId, doc).finally(() => process.exit(129));
    } else {
      postInitError(doc).finally(() => process.exit(129));
    }
  });
  process.on('unhandledRejection', (reason) => {
    const err = new UnhandledPromiseRejection(isErrorLike(reason) ? `${reason.name}: ${reason.message}` : String(reason));
    if (invocationInProgress && currentInvokeId !== undefined) {
      postError(currentInvokeId, err).finally(() => process.exit(128));
    } else {
      postInitError(err).finally(() => process.exit(128));
    }
  });

  let handler;
  try {
    handler = await loadHandler(taskRoot, handlerName);
  } catch (e) {
    await postInitError(e);
    process.exit(1);
  }

  for (;;) {
    let next;
    try {
      next = await apiRequest('GET', '/invocation/next');
    } catch (e) {
      process.stderr.write(`Stratus runtime: cannot reach Runtime API: ${e}\n`);
      process.exit(1);
    }
    if (next.status !== 200) {
      process.stderr.write(`Stratus runtime: next invocation failed with ${next.status}: ${next.body.toString().slice(0, 1000)}\n`);
      process.exit(1);
    }
    const headers = next.headers;
    currentInvokeId = headers['lambda-runtime-aws-request-id'];
    currentRequestId = currentInvokeId;
    if (headers['lambda-runtime-trace-id']) process.env._X_AMZN_TRACE_ID = headers['lambda-runtime-trace-id'];
    else delete process.env._X_AMZN_TRACE_ID;
    invocationInProgress = true;
    if (handler[HANDLER_STREAMING] === 'response') await runStreamingInvocation(handler, headers, next.body);
    else await runInvocation(handler, headers, next.body);
    invocationInProgress = false;
  }
}

main();
