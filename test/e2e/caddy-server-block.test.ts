import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sql } from 'kysely';
import { BLYTZ, baseEnv, ROOT, startServe, throughCaddy, type Served } from '../support/blytz-serve.js';
import { getWithHost } from '../support/http-get.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';

/**
 * The controller's own Caddy server block is desired state, seen from outside: the built
 * `blytz serve` against a real Caddy, restarted with another BLYTZ_CADDY_LISTEN, moves the block
 * at start; a listen address changed by hand is reported by `blytz doctor` until the sweep puts
 * it back, and the repair is logged and counted.
 */

let db: TestDatabase;
let served: Served;
const customer = `block-${Math.random().toString(36).slice(2, 8)}`;
const host = `${customer}.blytz.localhost`;

function doctor(): Promise<{ code: number | null; stdout: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(BLYTZ, ['doctor', '--server', served.url], {
      cwd: ROOT,
      env: { ...baseEnv(), BLYTZ_ADMIN_TOKEN: served.adminToken },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout }));
  });
}

const servedOn = (port: number) =>
  getWithHost(port, host, '/AGENTS.md', { timeoutMs: 2000 }).then(
    (r) => r.status,
    () => 'refused' as const,
  );

async function serverBlock(): Promise<{ listen: string[] }> {
  const res = await served.caddy.admin('/config/apps/http/servers/blytz');
  return (await res.json()) as { listen: string[] };
}

beforeAll(async () => {
  db = await createTestDatabase();
  // An hour between sweeps: only the sweep at start repairs, so a hand edit stays for doctor to see.
  served = await startServe({ databaseUrl: db.url, env: { BLYTZ_ROUTE_SWEEP_SECONDS: '3600' } });
  await sql`
    INSERT INTO customers (name, email, display_name, state, instructions)
    VALUES (${customer}, ${`${customer}@example.com`}, 'Ada', 'active', 'hi')
  `.execute(db.handle.db);
  await waitFor(async () => (await throughCaddy(served, host, '/AGENTS.md')).status === 200, 60_000).catch((error: unknown) => {
    throw new Error(`${(error as Error).message}\n${served.log().slice(-3000)}`);
  });
});

afterAll(async () => {
  await served?.stop();
  await db?.drop();
});

describe("the controller's Caddy server block", () => {
  it('moves when BLYTZ_CADDY_LISTEN changes between two starts', async () => {
    const [first, , second] = served.caddy.listenPorts;
    expect(await serverBlock()).toMatchObject({ listen: [`:${first}`] });
    expect(await servedOn(first)).toBe(200);

    await served.stopProcess();
    served.env['BLYTZ_CADDY_LISTEN'] = `:${second}`;
    await served.restart();

    // The sweep at start moves it: no hour's wait. It reports (log line, counter) at its end,
    // after the move is already served and maybe another write: wait for the report.
    const repaired = `caddy: listen [\\":${first}\\"] (want [\\":${second}\\"]); repaired`;
    await waitFor(async () => (await servedOn(second)) === 200 && served.log().includes(repaired), 30_000);
    expect(await serverBlock()).toMatchObject({ listen: [`:${second}`] });
    expect(await servedOn(first)).toBe('refused');
    const metrics = await (await fetch(`${served.url}/metrics`)).text();
    expect(metrics).toMatch(/^blytz_drift_corrections_total\{kind="server_block"\} 1$/m);
    // Customer URLs name the new port.
    const url = async () =>
      (await sql<{ url: string }>`SELECT status->>'url' AS url FROM customers WHERE name = ${customer}`.execute(db.handle.db))
        .rows[0]?.url;
    const want = `http://${host}:${second}`;
    await waitFor(async () => (await url()) === want, 30_000).catch(async () => {
      throw new Error(`status.url is ${await url()}, want ${want}`);
    });
  });

  it('`blytz doctor` reports a block changed by hand, and passes once it is put back', async () => {
    const configured = served.caddy.listenPorts[2];
    const other = served.caddy.listenPorts[1];
    expect((await doctor()).code).toBe(0);
    const res = await served.caddy.admin('/config/apps/http/servers/blytz/listen', {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify([`:${other}`]),
    });
    expect(res.status).toBe(200);

    const broken = await doctor();
    expect(broken.code).toBe(1);
    expect(broken.stdout).toMatch(
      new RegExp(
        `^caddy-server +FAIL +server block "blytz" differs from the configuration: listen \\[":${other}"\\] \\(want \\[":${configured}"\\]\\)`,
        'm',
      ),
    );

    // The next sweep (here: the one at start) puts it back.
    await served.stopProcess();
    await served.restart();
    await waitFor(async () => (await servedOn(configured)) === 200, 30_000);
    const fixed = await doctor();
    expect(fixed.stdout).toMatch(/^caddy-server +ok +server block "blytz" listens on :\d+ as configured/m);
    expect(fixed.code).toBe(0);
  });
});
