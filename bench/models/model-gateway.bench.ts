import { randomBytes } from 'node:crypto';
import { Agent, request as httpRequest } from 'node:http';
import { expect, it } from 'vitest';
import { sql } from 'kysely';
import { machineBusySeconds, summarize, type Summary } from '../lib.js';
import { report, type Figure } from '../support.js';
import { freePort, startServe } from '../../test/support/blytz-serve.js';
import { FAKE_ANTHROPIC_KEY, startFakeModelProvider } from '../../test/support/fake-model-provider.js';
import { createTestDatabase } from '../../test/support/postgres.js';
import { waitFor } from '../../test/support/wait-for.js';
import { ModelAccessStore } from '../../src/store/model-access-store.js';
import { SecretBox } from '../../src/store/secret-box.js';

/**
 * bench/models (issue 23): what the model gateway adds to a model call. The built `blytz serve`
 * runs the gateway (its own listener, real Postgres: one query to authenticate and read the
 * month's usage, one transaction to record the usage after the answer); the local fake provider
 * answers Anthropic messages streamed as Server-Sent Events. Baseline, in the same run, against
 * the same fake: the same request sent to the provider directly.
 *
 *  (a) time to first streamed byte, BENCH_MODEL_SEQUENTIAL requests one at a time (default 300),
 *      gateway and direct interleaved, p50 / p99;
 *  (b) throughput: BENCH_MODEL_STREAMS streams (default 600), BENCH_MODEL_CONCURRENCY at once
 *      (default 64) over 64 customers, each stream ~20 events 10 ms apart (a model generating),
 *      streams completed per second, and time to first byte under that load.
 *
 * Source check off (the bench client is not a customer container); the check's cost is a map
 * lookup, plus one Docker list per 5 s.
 */
const SEQUENTIAL = Number(process.env['BENCH_MODEL_SEQUENTIAL'] ?? 300);
const STREAMS = Number(process.env['BENCH_MODEL_STREAMS'] ?? 600);
const CONCURRENCY = Number(process.env['BENCH_MODEL_CONCURRENCY'] ?? 64);
const CUSTOMERS = 64;
const BODY = JSON.stringify({
  model: 'claude-haiku-4-5',
  max_tokens: 256,
  stream: true,
  messages: [{ role: 'user', content: 'Say hello' }],
});

const agent = new Agent({ keepAlive: true, maxSockets: 1024 });

/** One streamed request; milliseconds to the first body byte and to the end. */
function stream(url: string, key: string): Promise<{ ttfb: number; total: number; status: number }> {
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let ttfb = 0;
    const req = httpRequest(
      url,
      {
        method: 'POST',
        agent,
        headers: {
          'content-type': 'application/json',
          'x-api-key': key,
          'anthropic-version': '2023-06-01',
          'content-length': Buffer.byteLength(BODY),
        },
      },
      (res) => {
        res.on('data', () => {
          if (ttfb === 0) ttfb = performance.now() - started;
        });
        res.on('end', () => resolve({ ttfb, total: performance.now() - started, status: res.statusCode ?? 0 }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(BODY);
  });
}

async function load(
  url: (i: number) => string,
  key: (i: number) => string,
): Promise<{ seconds: number; ttfb: number[]; failed: number }> {
  const ttfb: number[] = [];
  let failed = 0;
  let next = 0;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      for (;;) {
        const i = next++;
        if (i >= STREAMS) return;
        const r = await stream(url(i), key(i));
        if (r.status === 200) ttfb.push(r.ttfb);
        else failed++;
      }
    }),
  );
  return { seconds: (performance.now() - started) / 1000, ttfb, failed };
}

it('model gateway: added latency and throughput beside the provider called directly', { timeout: 900_000 }, async () => {
  const busyStart = machineBusySeconds();
  const wallStart = performance.now();
  const db = await createTestDatabase();
  const fake = await startFakeModelProvider();
  fake.reply = Array.from({ length: 20 }, (_, i) => `word${i}`).join(' ');
  const secretKey = randomBytes(32);
  const gatewayPort = await freePort();
  const served = await startServe({
    databaseUrl: db.url,
    instance: `bench-models-${randomBytes(3).toString('hex')}`,
    env: {
      BLYTZ_SECRET_KEY: secretKey.toString('base64'),
      BLYTZ_MODEL_GATEWAY_LISTEN: `127.0.0.1:${gatewayPort}`,
      BLYTZ_MODEL_SOURCE_CHECK: 'off',
      BLYTZ_ANTHROPIC_API_KEY: FAKE_ANTHROPIC_KEY,
      BLYTZ_ANTHROPIC_API_BASE: fake.url,
      BLYTZ_MODEL_BUDGETS: 'personal=1000000000000',
      LOG_LEVEL: 'warn',
    },
  });
  try {
    // Customers as rows, paused (the controller leaves them alone: no containers), each with its credential.
    const names = Array.from({ length: CUSTOMERS }, (_, i) => `bench-model-${i}`);
    for (const name of names) {
      await sql`
        INSERT INTO customers (name, email, display_name, state, instructions, paused)
        VALUES (${name}, ${`${name}@example.com`}, 'Bench', 'active', '', true)
      `.execute(db.handle.db);
    }
    const store = new ModelAccessStore(db.handle, new SecretBox(secretKey));
    const keys = await Promise.all(names.map(async (n) => (await store.ensureCredential(n)) as string));
    const gateway = `http://127.0.0.1:${gatewayPort}/anthropic/v1/messages`;
    const direct = `${fake.url}/v1/messages`;

    // Warm both paths (connections, JIT, the pool).
    for (let i = 0; i < 20; i++) {
      await stream(gateway, keys[0]!);
      await stream(direct, FAKE_ANTHROPIC_KEY);
    }

    // (a) Time to first byte, one at a time, interleaved.
    const viaGateway: number[] = [];
    const viaDirect: number[] = [];
    for (let i = 0; i < SEQUENTIAL; i++) {
      const g = await stream(gateway, keys[i % CUSTOMERS]!);
      const d = await stream(direct, FAKE_ANTHROPIC_KEY);
      expect(g.status).toBe(200);
      expect(d.status).toBe(200);
      viaGateway.push(g.ttfb);
      viaDirect.push(d.ttfb);
    }
    const ttfbGateway = summarize(viaGateway);
    const ttfbDirect = summarize(viaDirect);

    // (b) Throughput: many streams at once, each generating for ~200 ms.
    fake.eventDelayMs = 10;
    const loadDirect = await load(
      () => direct,
      () => FAKE_ANTHROPIC_KEY,
    );
    const loadGateway = await load(
      () => gateway,
      (i) => keys[i % CUSTOMERS]!,
    );
    fake.eventDelayMs = 0;
    expect(loadGateway.failed).toBe(0);
    expect(loadDirect.failed).toBe(0);

    // Every metered request was recorded (warm-up + sequential + load).
    const expected = 20 + SEQUENTIAL + STREAMS;
    await waitFor(async () => {
      const row = await sql<{ n: string }>`SELECT count(*) AS n FROM model_requests`.execute(db.handle.db);
      return Number(row.rows[0]?.n) === expected;
    }, 60_000);

    const underLoadGateway: Summary = summarize(loadGateway.ttfb);
    const underLoadDirect: Summary = summarize(loadDirect.ttfb);
    const busy = machineBusySeconds() - busyStart;
    const wall = (performance.now() - wallStart) / 1000;
    const figures: Figure[] = [
      {
        name: 'time to first byte, p50 (one at a time)',
        value: ttfbGateway.p50,
        unit: 'ms',
        baseline: { name: 'provider directly', value: ttfbDirect.p50 },
      },
      {
        name: 'time to first byte, p99 (one at a time)',
        value: ttfbGateway.p99,
        unit: 'ms',
        baseline: { name: 'provider directly', value: ttfbDirect.p99 },
      },
      {
        name: 'added time to first byte, p50',
        value: ttfbGateway.p50 - ttfbDirect.p50,
        unit: 'ms',
        note: 'authentication and usage read (one Postgres query), forwarding',
      },
      {
        name: `streams per second, ${CONCURRENCY} at once`,
        value: STREAMS / loadGateway.seconds,
        unit: 'streams/s',
        baseline: { name: 'provider directly', value: STREAMS / loadDirect.seconds },
        note: `${STREAMS} streams of ~20 events 10 ms apart, ${CUSTOMERS} customers`,
      },
      {
        name: `time to first byte under load, p50 (${CONCURRENCY} at once)`,
        value: underLoadGateway.p50,
        unit: 'ms',
        baseline: { name: 'provider directly', value: underLoadDirect.p50 },
      },
      {
        name: `time to first byte under load, p99 (${CONCURRENCY} at once)`,
        value: underLoadGateway.p99,
        unit: 'ms',
        baseline: { name: 'provider directly', value: underLoadDirect.p99 },
      },
      {
        name: 'machine busy during the run',
        value: (100 * busy) / wall,
        unit: '% of one core',
        note: `over ${Math.round(wall)} s, all processes`,
      },
    ];
    report('model-gateway', 'Model gateway: added latency and throughput', figures, {
      method:
        'built `blytz serve` (gateway on its own listener, real Postgres) in front of the local fake provider (Anthropic messages, streamed); the same requests to the fake directly as the baseline, same run.',
    });
  } finally {
    await served.stop();
    await fake.close();
    await db.drop();
  }
});
