// Drives a real multipult server with off-the-shelf JavaScript clients: graphql-request (GraphQL
// over HTTP) and graphql-ws (graphql-transport-ws). Run by .ci/run:
//   MULTIPULT_BIN=path/to/multipult node --test tests/clients
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { auditServer } from 'graphql-http';
import { GraphQLClient, ClientError } from 'graphql-request';
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';
import { startServer } from './server.mjs';

const VERSION_QUERY = '{ apiInfo { version environment } }';
let server;
let address;

before(async () => {
  ({ server, address } = await startServer({
    WS_CONNECTION_INIT_TIMEOUT: '500ms',
    RATE_LIMIT_ANONYMOUS: '10000/1m',
  }));
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
  // No CSRF header needed: the request carries no credentials a browser would attach by itself.
  const client = new GraphQLClient(`http://${address}/graphql`, { method: 'GET' });
  const data = await client.request(VERSION_QUERY);
  assert.equal(data.apiInfo.environment, 'TEST');
});

const PASSWORD = 'correct horse battery staple';

async function signIn(email) {
  const client = http();
  await client.request(
    'mutation($input: RegisterInput!) { register(input: $input) { message } }',
    { input: { email, password: PASSWORD } },
  );
  const { login } = await client.request(
    'mutation($input: LoginInput!) { login(input: $input) { accessToken user { email } } }',
    { input: { email, password: PASSWORD } },
  );
  return login;
}

test('graphql-request runs mutations and sends a bearer token', async () => {
  const login = await signIn('js-client@example.com');
  assert.equal(login.user.email, 'js-client@example.com');
  const client = new GraphQLClient(`http://${address}/graphql`, {
    headers: { authorization: `Bearer ${login.accessToken}` },
  });
  const data = await client.request('{ me { email roles { name } } }');
  assert.deepEqual(data.me, { email: 'js-client@example.com', roles: [{ name: 'user' }] });
});

test('graphql-request gets 401 UNAUTHENTICATED for a bad token', async () => {
  const client = new GraphQLClient(`http://${address}/graphql`, {
    headers: { authorization: 'Bearer not-a-real-token' },
  });
  await assert.rejects(client.request('{ me { email } }'), (error) => {
    assert.equal(error.response.status, 401);
    assert.equal(error.response.errors[0].extensions.code, 'UNAUTHENTICATED');
    return true;
  });
});

test('graphql-ws authenticates with a token in connection_init and runs a query', async () => {
  const login = await signIn('js-socket@example.com');
  const client = ws({ connectionParams: { authorization: `Bearer ${login.accessToken}` } });
  try {
    const results = [];
    for await (const result of client.iterate({ query: '{ me { email } apiInfo { environment } }' })) {
      results.push(result);
    }
    assert.equal(results.length, 1);
    assert.equal(results[0].data.me.email, 'js-socket@example.com');
    assert.equal(results[0].data.apiInfo.environment, 'TEST');
  } finally {
    await client.dispose();
  }
});

test('an API key works with graphql-request (X-Api-Key) and graphql-ws (connectionParams.apiKey)', async () => {
  const owner = await signIn('js-keys@example.com');
  const asOwner = new GraphQLClient(`http://${address}/graphql`, {
    headers: { authorization: `Bearer ${owner.accessToken}` },
  });
  await asOwner.request(
    'mutation { createOrganization(input: { name: "JS Team", slug: "js-team" }) { slug } }',
  );
  const { createApiKey } = await asOwner.request(
    'mutation { createApiKey(organization: "js-team", input: { name: "ci", environment: PRODUCTION, scopes: ["org:read"] }) { key } }',
  );
  assert.match(createApiKey.key, /^mpk_prod_[A-Za-z0-9]{40}$/);
  const asKey = new GraphQLClient(`http://${address}/graphql`, {
    headers: { 'x-api-key': createApiKey.key },
  });
  const data = await asKey.request('{ organization(slug: "js-team") { name viewerRole } }');
  assert.deepEqual(data.organization, { name: 'JS Team', viewerRole: null });
  await assert.rejects(asKey.request('{ me { email } }'), (error) => {
    assert.equal(error.response.errors[0].extensions.code, 'FORBIDDEN');
    return true;
  });
  const client = ws({ connectionParams: { apiKey: createApiKey.key } });
  try {
    const results = [];
    for await (const result of client.iterate({ query: '{ organization(slug: "js-team") { name } }' })) {
      results.push(result);
    }
    assert.deepEqual(results, [{ data: { organization: { name: 'JS Team' } } }]);
  } finally {
    await client.dispose();
  }
});

test('graphql-ws is closed with 4403 for a forged token', async () => {
  const closed = new Promise((resolve) => {
    const client = ws({
      connectionParams: { token: 'forged' },
      on: { closed: (event) => resolve({ code: event.code, client }) },
    });
    client.iterate({ query: '{ __typename }' }).next().catch(() => {});
  });
  const { code, client } = await closed;
  assert.equal(code, 4403);
  await client.dispose();
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

test('graphql-ws subscribes to notificationAdded and receives the notice a mutation causes', async () => {
  const login = await signIn('js-notified@example.com');
  const client = ws({ connectionParams: { authorization: `Bearer ${login.accessToken}` } });
  try {
    const events = client.iterate({
      query: 'subscription { notificationAdded { kind title link cursor } }',
    });
    const first = events.next();
    // Let the subscription register, then sign in from a browser the account never used.
    await new Promise((resolve) => setTimeout(resolve, 300));
    const elsewhere = new GraphQLClient(`http://${address}/graphql`, {
      headers: { 'user-agent': 'AnotherDevice/1.0' },
    });
    await elsewhere.request(
      'mutation($input: LoginInput!) { login(input: $input) { accessToken } }',
      { input: { email: 'js-notified@example.com', password: PASSWORD } },
    );
    const { value } = await first;
    assert.equal(value.data.notificationAdded.kind, 'SECURITY');
    assert.equal(value.data.notificationAdded.title, 'New sign-in to your account');
    assert.ok(value.data.notificationAdded.cursor);
    await events.return();
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

test('every GraphQL-over-HTTP audit passes (graphql-http serverAudits: MUST, SHOULD and MAY)', async () => {
  const results = await auditServer({ url: `http://${address}/graphql` });
  const failures = results
    .filter((result) => result.status !== 'ok')
    .map((result) => `${result.status} ${result.id} ${result.name}: ${result.reason}`);
  assert.deepEqual(failures, [], failures.join('\n'));
  assert.ok(results.length > 30, `${results.length} audits ran`);
});
