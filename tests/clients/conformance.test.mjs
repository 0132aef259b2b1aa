// Drives a real multipult server with off-the-shelf JavaScript clients: graphql-request (GraphQL
// over HTTP) and graphql-ws (graphql-transport-ws). Run by .ci/run:
//   MULTIPULT_BIN=path/to/multipult node --test tests/clients
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { GraphQLClient, ClientError } from 'graphql-request';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const VERSION_QUERY = '{ apiInfo { version environment } }';
let server;
let address;

before(async () => {
  const bin = process.env.MULTIPULT_BIN;
  assert.ok(bin, 'set MULTIPULT_BIN to the built multipult binary');
  server = spawn(bin, ['serve'], {
    env: {
      PATH: process.env.PATH ?? '',
      APP_ENV: 'test',
      APP_PORT: '0',
      DATABASE_URL: 'sqlite::memory:',
      LOG_FORMAT: 'json',
      WS_CONNECTION_INIT_TIMEOUT: '500ms',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  address = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('server did not start in 30 s')), 30_000);
    server.once('exit', (code) => reject(new Error(`server exited with ${code}`)));
    createInterface({ input: server.stdout }).on('line', (line) => {
      try {
        const entry = JSON.parse(line);
        if (entry.message === 'listening') {
          clearTimeout(timer);
          resolve(entry.address);
        }
      } catch {
        // not a log line
      }
    });
  });
});

after(() => {
  server?.kill('SIGTERM');
});

const http = () => new GraphQLClient(`http://${address}/graphql`);

const ws = (options = {}) =>
  createClient({
    url: `ws://${address}/graphql/ws`,
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    ...options,
  });

test('graphql-request runs a query', async () => {
  const data = await http().request(VERSION_QUERY);
  assert.equal(data.apiInfo.environment, 'TEST');
  assert.match(data.apiInfo.version, /^\d+\.\d+\.\d+/);
});

test('graphql-request runs a query with variables and an operation name', async () => {
  const data = await http().request(
    'query Info($skip: Boolean!) { apiInfo @skip(if: $skip) { version } __typename }',
    { skip: true },
  );
  assert.deepEqual(data, { __typename: 'QueryRoot' });
});

test('graphql-request surfaces a validation error with its code and the 400 status', async () => {
  await assert.rejects(http().request('{ doesNotExist }'), (error) => {
    assert.ok(error instanceof ClientError, String(error));
    assert.equal(error.response.status, 400);
    const [first] = error.response.errors;
    assert.equal(first.extensions.code, 'GRAPHQL_VALIDATION_FAILED');
    assert.ok(first.extensions.requestId);
    return true;
  });
});

test('graphql-request runs a query over GET', async () => {
  // (The client itself sends mutations over POST; the server's 405 for GET mutations is covered by
  // the Rust tests.)
  const client = new GraphQLClient(`http://${address}/graphql`, { method: 'GET' });
  const data = await client.request(VERSION_QUERY);
  assert.equal(data.apiInfo.environment, 'TEST');
});

test('graphql-ws runs a query over the socket', async () => {
  const client = ws({ connectionParams: { token: 'client-token' } });
  try {
    const results = [];
    for await (const result of client.iterate({ query: VERSION_QUERY })) {
      results.push(result);
    }
    assert.equal(results.length, 1);
    assert.equal(results[0].data.apiInfo.environment, 'TEST');
  } finally {
    await client.dispose();
  }
});

test('graphql-ws subscribes and receives events until completion', async () => {
  const client = ws();
  try {
    const sequences = [];
    for await (const result of client.iterate({
      query: 'subscription { heartbeat(intervalMs: 100, count: 3) { sequence at } }',
    })) {
      sequences.push(result.data.heartbeat.sequence);
    }
    assert.deepEqual(sequences, [1, 2, 3]);
  } finally {
    await client.dispose();
  }
});

test('graphql-ws receives errors of an invalid operation', async () => {
  const client = ws();
  try {
    await assert.rejects(
      (async () => {
        for await (const _ of client.iterate({ query: '{ doesNotExist }' })) {
          // nothing expected
        }
      })(),
      (errors) => {
        assert.ok(Array.isArray(errors), String(errors));
        assert.equal(errors[0].extensions.code, 'GRAPHQL_VALIDATION_FAILED');
        return true;
      },
    );
  } finally {
    await client.dispose();
  }
});

test('a socket that never sends connection_init is closed with 4408', async () => {
  const socket = new WebSocket(`ws://${address}/graphql/ws`, 'graphql-transport-ws');
  const code = await new Promise((resolve, reject) => {
    socket.on('close', (closeCode) => resolve(closeCode));
    socket.on('error', reject);
  });
  assert.equal(code, 4408);
});
