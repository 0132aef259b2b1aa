// Many WebSocket subscribers on one instance, one event: delivery latency and memory per socket.
//
//   ulimit -n 65536; SUBSCRIBERS=10000 MULTIPULT_BIN=target/release/multipult \
//     node bench/subscribers.mjs
//
// Starts the binary on a scratch SQLite file with the limits raised (so they are not what is
// measured), signs one user in, opens SUBSCRIBERS sockets of that user each subscribed to
// `notificationAdded`, reads the server's RSS, then signs the user in from a browser it never
// used — one SECURITY notification, fanned out to every socket — and times each delivery from
// the moment the sign-in was sent. Uses the `ws` package of tests/clients (npm ci there first).
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

const require = createRequire(new URL('../tests/clients/package.json', import.meta.url));
const WebSocket = require('ws');

const COUNT = Number(process.env.SUBSCRIBERS ?? 10000);
const BIN = process.env.MULTIPULT_BIN ?? 'target/release/multipult';
const PASSWORD = 'correct horse battery staple';

function rssKiB(pid) {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  return Number(line.split(/\s+/)[1]);
}

async function start() {
  const dir = mkdtempSync(join(tmpdir(), 'multipult-subscribers-'));
  const server = spawn(BIN, ['serve'], {
    env: {
      PATH: process.env.PATH ?? '',
      APP_ENV: 'development',
      APP_PORT: '0',
      DATA_DIR: dir,
      DATABASE_URL: `sqlite://${dir}/bench.db?mode=rwc`,
      LOG_FORMAT: 'json',
      LOG_LEVEL: 'warn,multipult=info',
      WS_MAX_CONNECTIONS_PER_USER: String(COUNT + 10),
      RATE_LIMIT_ENABLED: 'false',
      COST_BUDGET_USER: 'off',
      COST_BUDGET_ANONYMOUS: 'off',
      ...(process.env.BENCH_DATABASE_URL ? { DATABASE_URL: process.env.BENCH_DATABASE_URL } : {}),
      ...(process.env.BENCH_REDIS_URL ? { REDIS_URL: process.env.BENCH_REDIS_URL } : {}),
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const address = await new Promise((resolve, reject) => {
    server.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
    createInterface({ input: server.stdout }).on('line', (line) => {
      try {
        const entry = JSON.parse(line);
        if (entry.message === 'listening') resolve(entry.address);
      } catch {
        // not a log line
      }
    });
  });
  return { server, address };
}

async function gql(address, query, variables, headers = {}) {
  const response = await fetch(`http://${address}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ query, variables }),
  });
  return response.json();
}

function subscriber(address, token, onEvent) {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(`ws://${address}/graphql/ws`, 'graphql-transport-ws');
    socket.on('error', reject);
    socket.on('open', () =>
      socket.send(JSON.stringify({ type: 'connection_init', payload: { authorization: `Bearer ${token}` } })),
    );
    socket.on('message', (data) => {
      const message = JSON.parse(data.toString());
      if (message.type === 'connection_ack') {
        socket.send(JSON.stringify({
          type: 'subscribe',
          id: '1',
          payload: { query: 'subscription { notificationAdded { id title } }' },
        }));
        resolve(socket);
      } else if (message.type === 'next') {
        onEvent();
      } else if (message.type === 'ping') {
        socket.send(JSON.stringify({ type: 'pong' }));
      }
    });
  });
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

const { server, address } = await start();
try {
  const email = 'subscriber@example.com';
  await gql(address, 'mutation($i: RegisterInput!) { register(input: $i) { message } }', { i: { email, password: PASSWORD } });
  const login = await gql(address, 'mutation($i: LoginInput!) { login(input: $i) { accessToken } }', { i: { email, password: PASSWORD } });
  const token = login.data.login.accessToken;

  const before = rssKiB(server.pid);
  let sentAt = 0;
  const latencies = [];
  let done;
  const all = new Promise((resolve) => (done = resolve));
  const onEvent = () => {
    latencies.push(performance.now() - sentAt);
    if (latencies.length === COUNT) done();
  };
  const sockets = [];
  const opened = performance.now();
  for (let i = 0; i < COUNT; i += 200) {
    const batch = [];
    for (let j = i; j < Math.min(COUNT, i + 200); j++) batch.push(subscriber(address, token, onEvent));
    sockets.push(...(await Promise.all(batch)));
  }
  const openSeconds = (performance.now() - opened) / 1000;
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const idle = rssKiB(server.pid);

  sentAt = performance.now();
  await gql(address, 'mutation($i: LoginInput!) { login(input: $i) { accessToken } }', { i: { email, password: PASSWORD } }, { 'user-agent': 'AnotherDevice/1.0' });
  const timeout = setTimeout(() => done(), 30_000);
  await all;
  clearTimeout(timeout);
  latencies.sort((a, b) => a - b);

  console.log(`subscribers held:          ${sockets.length} (opened in ${openSeconds.toFixed(1)} s)`);
  console.log(`events delivered:          ${latencies.length} of ${COUNT}`);
  console.log(`delivery p50 / p99 / max:  ${percentile(latencies, 50).toFixed(0)} / ${percentile(latencies, 99).toFixed(0)} / ${latencies.at(-1).toFixed(0)} ms (from sending the sign-in that causes it)`);
  console.log(`server RSS before / idle:  ${(before / 1024).toFixed(0)} MB / ${(idle / 1024).toFixed(0)} MB`);
  console.log(`RSS per idle subscriber:   ${(((idle - before) * 1024) / COUNT / 1024).toFixed(1)} KB`);
  for (const socket of sockets) socket.terminate();
} finally {
  server.kill('SIGTERM');
}
