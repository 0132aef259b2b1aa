// GraphiQL in a real browser: Debian's Chromium, headless, driven by playwright-core. The page
// must work with no network beyond the server (every asset from the binary, nothing blocked by
// its Content-Security-Policy) and run a query typed into it. A screenshot of the result goes to
// $ARTIFACTS_DIR (CI: $CARGO_TARGET_DIR/ci-artifacts/graphiql.png).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { startServer } from './server.mjs';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ARTIFACTS = process.env.ARTIFACTS_DIR ?? join(tmpdir(), 'multipult-artifacts');
// CI installs Chromium (.ci/run); elsewhere the test says why it did not run.
const skip = !existsSync(CHROMIUM) && !process.env.CI ? `no browser at ${CHROMIUM}` : false;

let server;
let address;
let browser;

before(async () => {
  if (skip) return;
  ({ server, address } = await startServer({ APP_ENV: 'development' }));
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
});

after(async () => {
  await browser?.close();
  server?.kill('SIGTERM');
});

test('GraphiQL loads from the binary and runs a query in a real browser', { skip }, async () => {
  const origin = `http://${address}`;
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  const outside = [];
  const failed = [];
  const violations = [];
  page.on('request', (request) => {
    if (!request.url().startsWith(origin) && !request.url().startsWith('data:')) {
      outside.push(request.url());
    }
  });
  page.on('requestfailed', (request) => failed.push(`${request.url()}: ${request.failure()?.errorText}`));
  page.on('response', (response) => {
    if (response.status() >= 400) failed.push(`${response.url()}: ${response.status()}`);
  });
  page.on('console', (message) => {
    if (/Content.Security.Policy|integrity/i.test(message.text())) violations.push(message.text());
  });
  await page.addInitScript(() => {
    window.__violations = [];
    document.addEventListener('securitypolicyviolation', (event) => {
      window.__violations.push(`${event.violatedDirective} ${event.blockedURI}`);
    });
  });
  page.on('pageerror', (error) => violations.push(`page error: ${error.message}`));

  const expected = await (
    await fetch(`${origin}/graphql`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ query: '{ apiInfo { version } }' }),
    })
  ).json();

  const query = '{ apiInfo { version } }';
  await page.goto(`${origin}/graphql#query=${encodeURIComponent(query)}`);
  await page.locator('.graphiql-execute-button').click({ timeout: 20_000 });
  const result = page.locator('.graphiql-response .CodeMirror');
  await result.getByText(expected.data.apiInfo.version).waitFor({ timeout: 20_000 });

  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'graphiql.png') });

  const shown = await result.innerText();
  assert.match(shown, /"apiInfo"/);
  assert.ok(shown.includes(`"version": "${expected.data.apiInfo.version}"`), shown);
  assert.deepEqual(outside, [], 'requests left the server');
  assert.deepEqual(failed, [], 'requests failed');
  violations.push(...(await page.evaluate(() => window.__violations)));
  assert.deepEqual(violations, [], 'the page broke its policy or threw');
  // What was typed stays in the URL's fragment, never sent to the server.
  assert.match(page.url(), /#query=/);
});
