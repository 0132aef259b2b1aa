// Many WebSocket subscribers, one event: delivery latency and memory per socket.
//
//   ulimit -n 20000; SUBSCRIBERS=10000 MULTIPULT_BIN=target/release/multipult \
//     node bench/subscribers.mjs
//
//   # the same across two instances sharing PostgreSQL and Redis
//   INSTANCES=2 BENCH_DATABASE_URL=postgres://… BENCH_REDIS_URL=redis://… \
//     SUBSCRIBERS=10000 MULTIPULT_BIN=target/release/multipult node bench/subscribers.mjs
//
// Starts INSTANCES copies of the binary (default 1, on a scratch SQLite file; more need the
// shared backends) with the limits raised (so they are not what is measured), signs one user
// in, opens SUBSCRIBERS sockets of that user spread evenly over the instances, each subscribed
// to `notificationAdded`, reads each server's RSS, then signs the user in on the first instance
// from a browser it never used — one SECURITY notification, fanned out to every socket on every
// instance — and times each delivery from the moment the sign-in was sent. Uses the `ws`
// package of tests/clients (npm ci there first).
import { spawn } from 'node:child_process';
import { mkdtempSync, openSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const require = createRequire(new URL('../tests/clients/package.json', import.meta.url));
const WebSocket = require('ws');

const COUNT = Number(process.env.SUBSCRIBERS ?? 10000);
const BIN = process.env.MULTIPULT_BIN ?? 'target/release/multipult';
const INSTANCES = Number(process.env.INSTANCES ?? 1);
if (INSTANCES > 1 && !(process.env.BENCH_DATABASE_URL && process.env.BENCH_REDIS_URL)) {
  console.error('INSTANCES > 1 needs BENCH_DATABASE_URL and BENCH_REDIS_URL (shared backends)');
  process.exit(2);
}
// Every instance must accept the others' tokens.
const SHARED_SECRETS = {
  JWT_SECRET: 'bench-jwt-secret-0123456789abcdef0123456789abcdef',
  SECRETS_KEY: '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff',
};
const PASSWORD = 'correct horse battery staple';

function rssKiB(pid) {
  const line = readFileSync(`/proc/${pid}/status`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('VmRSS:'));
  return Number(line.split(/\s+/)[1]);
}

async function start() {
  const dir = mkdtempSync(join(tmpdir(), 'multipult-subscribers-'));
  // The server logs to a file, not to a pipe this process reads: with thousands of sockets the
  // client is busy, and a full pipe would stall the server's log writes (and measure that).
  const log = join(dir, 'server.log');
  const server = spawn(BIN, ['serve'], {
    env: {
      PATH: process.env.PATH ?? '',
      APP_ENV: 'development',
      APP_PORT: '0',
      DATA_DIR: dir,
      DATABASE_URL: `sqlite://${dir}/bench.db?mode=rwc`,
      LOG_FORMAT: 'json',
      LOG_LEVEL: 'warn,multipult=info',
      ...SHARED_SECRETS,
      WS_MAX_CONNECTIONS_PER_USER: String(COUNT + 10),
      RATE_LIMIT_ENABLED: 'false',
      COST_BUDGET_USER: 'off',
      COST_BUDGET_ANONYMOUS: 'off',
      ...(process.env.BENCH_DATABASE_URL ? { DATABASE_URL: process.env.BENCH_DATABASE_URL } : {}),
      ...(process.env.BENCH_REDIS_URL ? { REDIS_URL: process.env.BENCH_REDIS_URL } : {}),
    },
    stdio: ['ignore', openSync(log, 'w'), 'inherit'],
  });
  let exited = null;
  server.once('exit', (code) => (exited = code));
  for (;;) {
    if (exited !== null) throw new Error(`server exited with ${exited} (log: ${log})`);
    for (const line of readFileSync(log, 'utf8').split('\n')) {
      try {
        const entry = JSON.parse(line);
        if (entry.message === 'listening') return { server, address: entry.address };
      } catch {
        // not a log line
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
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
          payload: { query: 'subscription { notificationAdded { id title createdAt } }' },
        }));
        resolve(socket);
      } else if (message.type === 'next') {
        onEvent(message.payload.data.notificationAdded.createdAt);
      } else if (message.type === 'ping') {
        socket.send(JSON.stringify({ type: 'pong' }));
      }
    });
  });
}

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

const mb = (kib) => (kib / 1024).toFixed(0);

// One after the other: the first applies the migrations.
const servers = [];
for (let i = 0; i < INSTANCES; i++) servers.push(await start());
const [first] = servers;
try {
  const email = `subscriber-${Date.now()}@example.com`;
  await gql(first.address, 'mutation($i: RegisterInput!) { register(input: $i) { message } }', { i: { email, password: PASSWORD } });
  const login = await gql(first.address, 'mutation($i: LoginInput!) { login(input: $i) { accessToken } }', { i: { email, password: PASSWORD } });
  const token = login.data.login.accessToken;

  const before = servers.map(({ server }) => rssKiB(server.pid));
  let sentAt = 0;
  const latencies = servers.map(() => []);
  const sinceCreated = [];
  let received = 0;
  let done;
  const all = new Promise((resolve) => (done = resolve));
  const onEvent = (instance) => (createdAt) => {
    latencies[instance].push(performance.now() - sentAt);
    sinceCreated.push(Date.now() - Date.parse(createdAt));
    received += 1;
    if (received === COUNT) done();
  };
  const sockets = [];
  const opened = performance.now();
  for (let i = 0; i < COUNT; i += 200) {
    const batch = [];
    for (let j = i; j < Math.min(COUNT, i + 200); j++) {
      const instance = j % INSTANCES;
      batch.push(subscriber(servers[instance].address, token, onEvent(instance)));
    }
    sockets.push(...(await Promise.all(batch)));
  }
  const openSeconds = (performance.now() - opened) / 1000;
  await new Promise((resolve) => setTimeout(resolve, 2000));
  const idle = servers.map(({ server }) => rssKiB(server.pid));

  sentAt = performance.now();
  await gql(first.address, 'mutation($i: LoginInput!) { login(input: $i) { accessToken } }', { i: { email, password: PASSWORD } }, { 'user-agent': 'AnotherDevice/1.0' });
  const timeout = setTimeout(() => done(), 30_000);
  await all;
  clearTimeout(timeout);

  const summary = (values) => {
    const sorted = [...values].sort((a, b) => a - b);
    if (sorted.length === 0) return 'none';
    return `${sorted[0].toFixed(0)} / ${percentile(sorted, 50).toFixed(0)} / ${percentile(sorted, 99).toFixed(0)} / ${sorted.at(-1).toFixed(0)} ms`;
  };
  console.log(`instances:                 ${INSTANCES}${INSTANCES > 1 ? ' (event created on instance 1)' : ''}`);
  console.log(`subscribers held:          ${sockets.length} (opened in ${openSeconds.toFixed(1)} s)`);
  console.log(`events delivered:          ${received} of ${COUNT}`);
  console.log(`delivery min/p50/p99/max:  ${summary(latencies.flat())} (from sending the sign-in that causes it)`);
  console.log(`  from its createdAt:      ${summary(sinceCreated)} (the notification's own timestamp, ms resolution)`);
  if (INSTANCES > 1) {
    latencies.forEach((values, i) => console.log(`  on instance ${i + 1}:            ${summary(values)}`));
  }
  servers.forEach((_, i) => console.log(`instance ${i + 1} RSS before / idle: ${mb(before[i])} MB / ${mb(idle[i])} MB`));
  const grown = idle.reduce((a, b) => a + b, 0) - before.reduce((a, b) => a + b, 0);
  console.log(`RSS per idle subscriber:   ${((grown * 1024) / COUNT / 1024).toFixed(1)} KB`);
  for (const socket of sockets) socket.terminate();
} finally {
  for (const { server } of servers) server.kill('SIGTERM');
}
