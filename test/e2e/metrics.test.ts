import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import Stripe from 'stripe';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { insertCustomersAndWaitUntilReady } from '../support/customers.js';
import { waitFor } from '../support/wait-for.js';
import { startServe, type Served } from '../support/blytz-serve.js';

/**
 * `promtool check metrics` on a live /metrics (contract section 6: it must report nothing):
 * the built `blytz serve` on real Postgres, Docker and Caddy, after a customer was provisioned
 * and Stripe webhooks (a forged one, a signed one) arrived, so the histograms and labelled
 * counters carry samples, not only their HELP and TYPE lines.
 */

const WEBHOOK_SECRET = 'whsec_e2e_metrics_test_secret';

const CONTRACT_FAMILIES: Record<string, 'counter' | 'gauge' | 'histogram'> = {
  controller_runtime_reconcile_total: 'counter',
  controller_runtime_reconcile_errors_total: 'counter',
  controller_runtime_reconcile_time_seconds: 'histogram',
  controller_runtime_active_workers: 'gauge',
  controller_runtime_max_concurrent_reconciles: 'gauge',
  workqueue_depth: 'gauge',
  workqueue_adds_total: 'counter',
  workqueue_queue_duration_seconds: 'histogram',
  workqueue_work_duration_seconds: 'histogram',
  workqueue_retries_total: 'counter',
  workqueue_unfinished_work_seconds: 'gauge',
  workqueue_longest_running_processor_seconds: 'gauge',
  leader_election_master_status: 'gauge',
  blytz_customers: 'gauge',
  blytz_drift_corrections_total: 'counter',
  blytz_circuit_breaker_state: 'gauge',
  blytz_external_call_duration_seconds: 'histogram',
  blytz_stripe_webhook_events_total: 'counter',
  blytz_provision_duration_seconds: 'histogram',
  http_request_duration_seconds: 'histogram',
};

function promtoolCheckMetrics(text: string): { status: number | null; out: string } {
  if (!existsSync('/usr/bin/promtool') && spawnSync('promtool', ['--version']).status !== 0) {
    throw new Error('promtool is missing: run `scripts/services.sh tools` (apt-get install -y prometheus) as root');
  }
  const result = spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  return { status: result.status, out: `${result.stdout}${result.stderr}` };
}

/** The value of one sample line, e.g. sample(text, 'blytz_customers{phase="Ready"}'). */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe('live /metrics', () => {
  let db: TestDatabase;
  let served: Served;
  const name = `metrics-${Math.random().toString(36).slice(2, 8)}`;

  beforeAll(async () => {
    db = await createTestDatabase();
    served = await startServe({ databaseUrl: db.url, env: { STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET } });
  });
  afterAll(async () => {
    await served?.stop();
    await db?.drop();
  });

  const metrics = async () => {
    const res = await fetch(`${served.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/^text\/plain/);
    return res.text();
  };

  it('promtool check metrics reports nothing right after start', async () => {
    const { status, out } = promtoolCheckMetrics(await metrics());
    expect(out).toBe('');
    expect(status).toBe(0);
  });

  it('promtool check metrics reports nothing once every family carries samples', async () => {
    // A customer provisioned end to end: reconcile, queue, Docker/Caddy call and provision metrics.
    await insertCustomersAndWaitUntilReady(db.handle.db, [name], {
      timeoutMs: 60_000,
      explain: (error) => new Error(`${(error as Error).message}\n${served.log().slice(-3000)}`),
    });

    // Stripe webhooks: a forged one (400) and a correctly signed one of a type Blytz ignores.
    const forged = await fetch(`${served.url}/api/webhooks/stripe`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'stripe-signature': 't=1,v1=00' },
      body: '{}',
    });
    expect(forged.status).toBe(400);
    const payload = JSON.stringify({
      id: 'evt_metrics_1',
      object: 'event',
      type: 'customer.created',
      created: Math.floor(Date.now() / 1000),
      data: { object: { id: 'cus_1', object: 'customer' } },
    });
    const signature = Stripe.webhooks.generateTestHeaderString({ payload, secret: WEBHOOK_SECRET });
    const signed = await fetch(`${served.url}/api/webhooks/stripe`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'stripe-signature': signature },
      body: payload,
    });
    expect(signed.status).toBe(200);
    await fetch(`${served.url}/readyz`);

    // The phase gauge is refreshed every 15 s.
    const text = await waitFor(async () => {
      const t = await metrics();
      return (sample(t, 'blytz_customers{phase="Ready"}') ?? 0) >= 1 ? t : undefined;
    }, 30_000);

    for (const [family, type] of Object.entries(CONTRACT_FAMILIES)) {
      expect(text, family).toContain(`# TYPE ${family} ${type}\n`);
    }
    expect(sample(text, 'leader_election_master_status{name="blytz-controller"}')).toBe(1);
    expect(sample(text, 'controller_runtime_reconcile_total{controller="customer",result="success"}')).toBeGreaterThan(0);
    expect(sample(text, 'controller_runtime_max_concurrent_reconciles{controller="customer"}')).toBe(4);
    // The customer above went from nothing to Ready: its provisioning was timed.
    expect(sample(text, 'blytz_provision_duration_seconds_count')).toBeGreaterThanOrEqual(1);
    expect(sample(text, 'blytz_circuit_breaker_state{dependency="docker"}')).toBe(0);
    expect(sample(text, 'blytz_stripe_webhook_events_total{type="unknown",outcome="invalid_signature"}')).toBe(1);
    expect(sample(text, 'blytz_stripe_webhook_events_total{type="customer.created",outcome="ignored"}')).toBe(1);
    expect(text).toMatch(
      /^blytz_external_call_duration_seconds_count\{dependency="docker",operation="[^"]+",outcome="[^"]+"\} [1-9]/m,
    );
    expect(text).toMatch(/^http_request_duration_seconds_count\{method="POST",route="[^"]+",status_code="400"\} 1$/m);
    // prom-client's default process metrics are there too.
    expect(text).toContain('# TYPE process_cpu_seconds_total counter');

    const { status, out } = promtoolCheckMetrics(text);
    expect(out).toBe('');
    expect(status).toBe(0);
  });
});
