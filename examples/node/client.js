#!/usr/bin/env node
// A Node.js client of remotemediad over plain gRPC (@grpc/grpc-js), with
// the project's .proto: it opens a json-format session from Python source,
// calls methods, streams a generator, and handles a remote exception.
//
//   node client.js [--host HOST] [--port PORT] [--token TOKEN]
//
// The token defaults to $REMOTEMEDIA_TOKEN. Exit status 0 when every step
// did what it should.
'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const PROTO = path.join(__dirname, '..', '..', 'proto', 'remotemedia.proto');

// The Python class the session hosts: it lives in the server's worker.
const SOURCE = `
class Accumulator:
    def __init__(self, start=0):
        self.total = start

    def add(self, x):
        self.total += x
        return self.total

    def describe(self):
        return {"total": self.total, "kind": type(self.total).__name__}

    def countdown(self, n):
        for i in range(n, 0, -1):
            yield {"left": i}

    def divide(self, x):
        return self.total / x
`;

function parseArgs(argv) {
  const opts = {host: '127.0.0.1', port: 50052, token: process.env.REMOTEMEDIA_TOKEN};
  for (let i = 2; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error(`${flag} needs a value`);
    if (flag === '--host') opts.host = value;
    else if (flag === '--port') opts.port = Number(value);
    else if (flag === '--token') opts.token = value;
    else throw new Error(`unknown flag ${flag}`);
  }
  return opts;
}

// One session: a bidirectional Session stream, and the messages it yields.
class Session {
  constructor(client, metadata) {
    this.call = client.Session(metadata);
    this.queue = [];
    this.waiters = [];
    this.ended = null;
    this.nextId = 1;
    this.call.on('data', (m) => this.push(m));
    this.call.on('error', (e) => this.finish(e));
    this.call.on('end', () => this.finish(null));
  }

  push(m) {
    if (m.output) {  // what the object printed
      process.stderr.write(Buffer.from(m.output.data).toString());
      return;
    }
    if (m.progress) return;
    const w = this.waiters.shift();
    if (w) w.resolve(m); else this.queue.push(m);
  }

  finish(err) {
    this.ended = err || new Error('the session stream ended');
    for (const w of this.waiters.splice(0)) w.reject(this.ended);
  }

  next() {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.ended) return Promise.reject(this.ended);
    return new Promise((resolve, reject) => this.waiters.push({resolve, reject}));
  }

  static json(doc) {
    return Buffer.from(JSON.stringify(doc));
  }

  static value(callId, doc) {
    const data = Session.json(doc);
    return {call_id: callId, seq: 0, more: false, data, total_size: data.length};
  }

  async open(source, className, args) {
    this.call.write({open: {
      protocol: 'PROTOCOL_V1',
      format: 'FORMAT_JSON',
      source,
      class_name: className,
      init_args_json: Session.json({args, kwargs: {}}),
    }});
    const m = await this.next();
    if (m.error) throw remoteError(m.error);
    if (!m.ready) throw new Error(`expected Ready, got ${m.msg}`);
    return m.ready;
  }

  // One call; the decoded JSON result, or a RemoteError.
  async invoke(name, args = [], kwargs = {}) {
    const id = this.nextId++;
    this.call.write({call: {call_id: id, name, kind: 'CALL_METHOD',
      args: Session.value(id, {args, kwargs}), timeout_ms: 30000}});
    const m = await this.next();
    if (m.error) throw remoteError(m.error);
    if (!m.result || Number(m.result.call_id) !== id) {
      throw new Error(`unexpected answer to call ${id}: ${m.msg}`);
    }
    if (m.result.generator) return this.items(id);
    return JSON.parse(Buffer.from(m.result.value.data).toString());
  }

  // A generator's items, pulled a few at a time, until End.
  async items(id) {
    const out = [];
    for (;;) {
      this.call.write({pull: {call_id: id, n: 4, timeout_ms: 30000}});
      for (let i = 0; i < 4; i++) {
        const m = await this.next();
        if (m.end) return out;
        if (m.error) throw remoteError(m.error);
        out.push(JSON.parse(Buffer.from(m.item.value.data).toString()));
      }
    }
  }

  async close() {
    this.call.write({close: {}});
    this.call.end();
    try {
      for (;;) await this.next();
    } catch (e) {
      if (e.code !== undefined && e.code !== grpc.status.OK) throw e;
    }
  }
}

class RemoteError extends Error {}

function remoteError(err) {
  const e = new RemoteError(`${err.type}: ${err.message}`);
  e.remoteType = err.type;
  e.remoteTraceback = err.traceback;
  return e;
}

async function main() {
  const opts = parseArgs(process.argv);
  const def = protoLoader.loadSync(PROTO, {keepCase: true, enums: String, longs: Number,
    defaults: true, oneofs: true});
  const pkg = grpc.loadPackageDefinition(def).remotemedia.v1;
  const client = new pkg.RemoteExecution(`${opts.host}:${opts.port}`,
      grpc.credentials.createInsecure());
  const metadata = new grpc.Metadata();
  if (opts.token) metadata.add('authorization', `Bearer ${opts.token}`);

  const session = new Session(client, metadata);
  const ready = await session.open(SOURCE, 'Accumulator', [10]);
  console.log(`session ${ready.session_id.slice(0, 8)} ready, python ${ready.python_version}`);
  console.log(`add(5) -> ${await session.invoke('add', [5])}`);
  console.log(`add(x=2.5) -> ${await session.invoke('add', [], {x: 2.5})}`);
  console.log(`describe() -> ${JSON.stringify(await session.invoke('describe'))}`);
  console.log(`countdown(3) -> ${JSON.stringify(await session.invoke('countdown', [3]))}`);
  try {
    await session.invoke('divide', [0]);
    throw new Error('divide(0) should have raised');
  } catch (e) {
    if (!(e instanceof RemoteError)) throw e;
    console.log(`divide(0) raised ${e.message}`);
  }
  console.log(`add(1) after the error -> ${await session.invoke('add', [1])}`);
  await session.close();
  client.close();
  console.log('closed');
}

main().catch((e) => {
  console.error(`error: ${e.message}`);
  process.exit(1);
});
