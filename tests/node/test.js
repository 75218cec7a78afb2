// Node interop test: drive a real corrald through @grpc/grpc-js + @grpc/proto-loader.
// Starts its own daemon on temp dirs with a unique --cgroup-parent, runs an exec with stdin,
// stdout, stderr and an exit code, checks errors, terminates, stops the daemon and checks that
// nothing is left. Prints "node: N passed, N failed"; exits non-zero on any failure.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const repo = path.resolve(__dirname, '..', '..');
const corrald = process.env.CORRALD || path.join(repo, 'build', 'corrald');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'corral-node-'));
const sock = path.join(tmp, 'corrald.sock');
const stateDir = path.join(tmp, 'state');
const logPath = path.join(tmp, 'corrald.log');
const cgroupParent = `corral-test-node-${process.pid}`;

const def = protoLoader.loadSync(['corral/v1/sandbox.proto', 'corral/v1/system.proto'], {
  keepCase: true, longs: Number, enums: String, defaults: true, includeDirs: [path.join(repo, 'api')],
});
const v1 = grpc.loadPackageDefinition(def).corral.v1;

let passed = 0;
let failed = 0;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const deadline = (s) => ({ deadline: Date.now() + s * 1000 });

function unary(client, method, req, seconds = 30) {
  return new Promise((resolve, reject) => {
    client[method](req, deadline(seconds), (err, res) => (err ? reject(err) : resolve(res)));
  });
}

// Read one output stream from offset 0 to eof, checking offsets are contiguous.
function readOutput(client, sandboxId, execId, stream) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let pos = 0;
    let eof = false;
    const call = client.ReadExecOutput(
      { sandbox_id: sandboxId, exec_id: execId, stream, offset: 0 }, deadline(60));
    call.on('data', (m) => {
      if (m.data.length) {
        if (m.offset !== pos) reject(new Error(`chunk at offset ${m.offset}, expected ${pos}`));
        chunks.push(m.data);
        pos += m.data.length;
      }
      if (m.eof) eof = true;
    });
    call.on('error', reject);
    call.on('end', () => (eof ? resolve(Buffer.concat(chunks)) : reject(new Error('stream ended without eof'))));
  });
}

async function waitExec(client, sandboxId, execId) {
  for (;;) {
    const r = await unary(client, 'WaitExec', { sandbox_id: sandboxId, exec_id: execId, timeout_ms: 30000 }, 60);
    if (r.finished) return r.exec;
  }
}

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

function eq(got, want, what) {
  assert(JSON.stringify(got) === JSON.stringify(want), `${what}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`);
}

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

function cgroupRoots() {
  const root = '/sys/fs/cgroup';
  if (fs.existsSync(path.join(root, 'cgroup.procs'))) return [root];
  return fs.readdirSync(root).map((n) => path.join(root, n))
    .filter((p) => !fs.lstatSync(p).isSymbolicLink() && fs.existsSync(path.join(p, 'cgroup.procs')));
}

function logTail() {
  try {
    return fs.readFileSync(logPath, 'utf8').split('\n').slice(-30).join('\n');
  } catch (e) {
    return '(no log)';
  }
}

async function main() {
  if (!fs.existsSync(corrald)) {
    console.log(`FAIL ${corrald} not built: run make`);
    failed++;
    fs.rmSync(tmp, { recursive: true, force: true });
    return;
  }
  const log = fs.openSync(logPath, 'a');
  const daemon = spawn(corrald, ['--socket', sock, '--state-dir', stateDir, '--cgroup-parent', cgroupParent,
    '--log-level', 'debug'], { stdio: ['ignore', log, log], detached: true });
  let exited = null;
  daemon.on('exit', (code, sig) => { exited = { code, sig }; });

  const client = new v1.SandboxService(`unix:${sock}`, grpc.credentials.createInsecure());
  const system = new v1.SystemService(`unix:${sock}`, grpc.credentials.createInsecure());
  try {
    await check('daemon answers GetInfo', async () => {
      const t0 = Date.now();
      for (;;) {
        assert(exited === null, `corrald exited during start: ${JSON.stringify(exited)}`);
        try {
          const info = await unary(system, 'GetInfo', {}, 1);
          assert(info.images.includes('busybox'), `images: ${info.images}`);
          return;
        } catch (e) {
          assert(Date.now() - t0 < 30000, `no answer within 30 s: ${e.message}`);
          await sleep(50);
        }
      }
    });
    if (failed) return;

    const sb = (await unary(client, 'CreateSandbox', { image: 'busybox', tags: { suite: 'node' } })).sandbox;
    await check('CreateSandbox', async () => {
      assert(sb.sandbox_id, 'no sandbox_id');
      eq(sb.state, 'SANDBOX_STATE_RUNNING', 'state');
    });

    await check('exec with stdin, stdout, stderr and exit code 3', async () => {
      const r = await unary(client, 'StartExec', {
        sandbox_id: sb.sandbox_id, exec_id: 'node-echo',
        argv: ['sh', '-c', 'echo out; echo err >&2; read x; echo got $x; exit 3'],
      });
      eq(r.created, true, 'created');
      eq(r.exec.exec_id, 'node-echo', 'exec_id');
      const out = readOutput(client, sb.sandbox_id, 'node-echo', 'EXEC_STREAM_STDOUT');
      const err = readOutput(client, sb.sandbox_id, 'node-echo', 'EXEC_STREAM_STDERR');
      const w = await unary(client, 'WriteExecStdin', {
        sandbox_id: sb.sandbox_id, exec_id: 'node-echo', offset: 0, data: Buffer.from('hi\n'), eof: true,
      });
      eq(w.next_offset, 3, 'next_offset');
      const ex = await waitExec(client, sb.sandbox_id, 'node-echo');
      eq((await out).toString(), 'out\ngot hi\n', 'stdout');
      eq((await err).toString(), 'err\n', 'stderr');
      eq(ex.exit_status.reason, 'EXIT_REASON_EXITED', 'reason');
      eq(ex.exit_status.exit_code, 3, 'exit_code');
    });

    await check('empty argv is INVALID_ARGUMENT', async () => {
      try {
        await unary(client, 'StartExec', { sandbox_id: sb.sandbox_id, argv: [] });
      } catch (e) {
        eq(e.code, grpc.status.INVALID_ARGUMENT, 'code');
        assert(/argv/i.test(e.details), `details: ${e.details}`);
        return;
      }
      throw new Error('no error');
    });

    await check('unknown sandbox is NOT_FOUND', async () => {
      try {
        await unary(client, 'GetSandbox', { sandbox_id: 'no-such-sandbox' });
      } catch (e) {
        eq(e.code, grpc.status.NOT_FOUND, 'code');
        assert(e.details.includes('no-such-sandbox'), `details: ${e.details}`);
        return;
      }
      throw new Error('no error');
    });

    await check('TerminateSandbox', async () => {
      await unary(client, 'TerminateSandbox', { sandbox_id: sb.sandbox_id });
      const r = await unary(client, 'WaitSandbox', { sandbox_id: sb.sandbox_id, timeout_ms: 10000 }, 20);
      eq(r.finished, true, 'finished');
      eq(r.sandbox.exit_status.reason, 'EXIT_REASON_TERMINATED', 'reason');
    });
  } finally {
    client.close();
    system.close();
    await check('daemon stops on SIGTERM and leaves nothing', async () => {
      if (exited === null) {
        daemon.kill('SIGTERM');
        for (let i = 0; exited === null; i++) {
          if (i === 200) {
            daemon.kill('SIGKILL');
            throw new Error('corrald ignored SIGTERM for 20 s');
          }
          await sleep(100);
        }
      }
      assert(exited.code === 0 || exited.sig === 'SIGTERM', `corrald exit ${JSON.stringify(exited)}`);
      const left = [];
      for (let i = 0; i < 50; i++) {
        left.length = 0;
        for (const root of cgroupRoots()) {
          const parent = path.join(root, cgroupParent);
          if (!fs.existsSync(parent)) continue;
          const subs = fs.readdirSync(parent, { withFileTypes: true }).filter((d) => d.isDirectory());
          if (subs.length) left.push(...subs.map((d) => path.join(parent, d.name)));
          else fs.rmdirSync(parent);
        }
        if (!left.length) break;
        await sleep(100);
      }
      assert(!left.length, `cgroup dirs left: ${left.join(' ')}`);
      const sdir = path.join(stateDir, 'sandboxes');
      assert(!fs.existsSync(sdir) || fs.readdirSync(sdir).length === 0, `sandbox dirs left in ${sdir}`);
    });
    if (failed) console.log(`---- corrald log (${logPath}) ----\n${logTail()}`);
    else fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  failed++;
  console.log(`FAIL ${e && e.stack ? e.stack : e}`);
}).finally(() => {
  console.log(`node: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
});
