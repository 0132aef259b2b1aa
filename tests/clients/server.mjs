// Starts the built multipult binary (MULTIPULT_BIN) on a free port in a scratch folder and
// resolves with its address once it logs "listening".
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';

export async function startServer(extraEnv = {}) {
  const bin = process.env.MULTIPULT_BIN;
  assert.ok(bin, 'set MULTIPULT_BIN to the built multipult binary');
  const server = spawn(bin, ['serve'], {
    env: {
      PATH: process.env.PATH ?? '',
      APP_ENV: 'test',
      APP_PORT: '0',
      DATABASE_URL: 'sqlite::memory:',
      // Mail and development files go to a scratch folder, not into the checkout.
      DATA_DIR: mkdtempSync(join(tmpdir(), 'multipult-clients-')),
      LOG_FORMAT: 'json',
      ...extraEnv,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const address = await new Promise((resolve, reject) => {
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
  return { server, address };
}
