import { randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openPostgres, type DatabaseHandle } from '../../src/store/database.js';
import { ROOT, startServe, type Served, type ServeOptions } from '../support/blytz-serve.js';
import { assertRoot, startChaosDocker, startChaosPostgres, type ChaosDocker, type ChaosPostgres } from '../support/chaos-services.js';
import { seededRandom, WebhookTraffic, type BillingCustomer } from '../support/chaos-webhooks.js';
import { marker, observeWorld, type WorldContext } from '../support/chaos-world.js';

/**
 * Chaos: the built `blytz serve` on real Postgres, Docker and Caddy with 20 active customers and
 * continuous signed Stripe webhook traffic (one event every 200 ms, each delivered twice and out
 * of order), through faults: kill -9 of the controller (20 times), Caddy restarted empty,
 * Postgres restarted, two replicas with the leader killed, the Docker engine restarted. After
 * each fault, within a bound, every customer must converge to the state its webhooks set, with
 * no duplicate or orphan container, route or port, no acknowledged webhook missing from the
 * ledger, and no container replaced.
 *
 * Postgres and the Docker engine are the suite's own (test/support/chaos-services.ts): restarting
 * them hits only the server under test. Run alone (`make chaos`; after the other suites in `make
 * test`): it loads the machine's two cores.
 */

const SEED = Number(process.env['CHAOS_SEED'] ?? Math.floor(Math.random() * 1e9));
const random = seededRandom(SEED);
const ACTIVE_CUSTOMERS = 20;
/** Two more customers whose subscriptions end during the suite (their teardown under faults). */
const LEAVERS = 2;
const KILLS = Number(process.env['CHAOS_KILLS'] ?? 20);
const PROVISIONING_KILLS = 2;
/** After the faulted part is back, the world must converge within this. */
const BOUND_MS = 60_000;
const SAMPLE_MS = 500;
// Below the kernel's ephemeral range and apart from every other suite's ports.
const PORT_RANGE = { from: 29_500, to: 29_599 };
const WEBHOOK_SECRET = `whsec_chaos_${randomBytes(12).toString('hex')}`;

interface FaultResult {
  fault: string;
  times: number[];
  violations: string[];
}

const results = new Map<string, FaultResult>();
const suiteStarted = Date.now();
const loadAtStart = loadavg()[0] as number;
let postgres: ChaosPostgres | undefined;
let engine: ChaosDocker | undefined;
let served: Served | undefined;
let standby: Served | undefined;
let database: DatabaseHandle | undefined;
let traffic: WebhookTraffic | undefined;
let ctx: WorldContext;
const customers: BillingCustomer[] = [];
let replicas: Served[] = [];
let ledgerOutcomes: Record<string, number> = {};

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const alive = (s: Served) => s.child.exitCode === null && s.child.signalCode === null;
/** Replicas the test means to be running (a killed one is out until restarted). */
let expectedAlive = new Set<Served>();

function serveOptions(extra: Partial<ServeOptions> = {}): ServeOptions {
  return {
    databaseUrl: (postgres as ChaosPostgres).url,
    portRange: PORT_RANGE,
    env: {
      DOCKER_HOST: (engine as ChaosDocker).host,
      STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
      // The traffic comes from Stripe's addresses via X-Forwarded-For, like behind a proxy.
      BLYTZ_TRUST_PROXY: 'loopback',
      // Production's own sweep period, not the 1 s the other e2e tests use.
      BLYTZ_ROUTE_SWEEP_SECONDS: '10',
    },
    ...extra,
  };
}

/** Replicas running and exactly one of them leading. */
async function leadershipProblems(): Promise<{ problems: string[]; violations: string[] }> {
  const problems: string[] = [];
  const violations: string[] = [];
  let leaders = 0;
  for (const replica of replicas) {
    if (!expectedAlive.has(replica)) continue;
    if (!alive(replica)) {
      violations.push(`blytz serve on :${replica.port} exited by itself: ${replica.log().slice(-1500)}`);
      continue;
    }
    try {
      const res = await fetch(`${replica.url}/readyz`, { signal: AbortSignal.timeout(3000) });
      const body = (await res.json()) as { leader?: boolean; status?: string };
      if (body.leader) leaders++;
      if (res.status !== 200) problems.push(`replica :${replica.port} not ready: ${JSON.stringify(body)}`);
    } catch (error) {
      problems.push(`replica :${replica.port} /readyz: ${(error as Error).message}`);
    }
  }
  if (leaders !== 1) problems.push(`${leaders} leaders`);
  return { problems, violations };
}

/** The server's warnings and errors about the customers named in `problems` (request logs drown a plain tail of the log). */
function warningsAbout(problems: string[], log: string): string {
  const names = new Set(problems.map((p) => p.split(' ')[0]).filter((n): n is string => n !== undefined && n.startsWith('chaos-')));
  const warnings = log.split('\n').filter((line) => /"level":[456]0/.test(line));
  const about = warnings.filter((line) => [...names].some((n) => line.includes(n)));
  // Nothing about them: the latest warnings at all (a stuck dependency says nothing per customer).
  return (about.length > 0 ? about : warnings).slice(-20).join('\n') || log.slice(-3000);
}

/**
 * Samples the world until nothing is left to converge, or BOUND_MS after `recoveredAt`.
 * Convergence time is counted from `injectedAt` (the fault itself).
 */
async function converge(fault: string, injectedAt: number, recoveredAt = Date.now(), boundMs = BOUND_MS): Promise<FaultResult> {
  const result = results.get(fault) ?? { fault, times: [], violations: [] };
  results.set(fault, result);
  const seen = new Set<string>();
  let lastProgress = Date.now();
  for (;;) {
    let problems: string[];
    try {
      const world = await observeWorld(ctx, { unackedBefore: recoveredAt });
      const leadership = await leadershipProblems();
      problems = [...world.problems, ...leadership.problems];
      for (const v of [...world.violations, ...leadership.violations]) {
        if (!seen.has(v)) {
          seen.add(v);
          result.violations.push(v);
        }
      }
    } catch (error) {
      problems = [`observation failed: ${(error as Error).message}`];
    }
    if (problems.length === 0) {
      result.times.push(Date.now() - injectedAt);
      const states = new Map<string, number>();
      for (const name of ctx.names) {
        const state = (traffic as WebhookTraffic).expected(name).state;
        states.set(state, (states.get(state) ?? 0) + 1);
      }
      console.log(`[chaos] ${fault}: converged in ${Date.now() - injectedAt} ms (${[...states].map(([k, v]) => `${v} ${k}`).join(', ')})`);
      return result;
    }
    if (Date.now() - lastProgress > 10_000) {
      lastProgress = Date.now();
      console.log(`[chaos] ${fault}: ${((Date.now() - injectedAt) / 1000).toFixed(0)} s, still: ${problems.slice(0, 6).join('; ')}`);
    }
    if (Date.now() - recoveredAt > boundMs) {
      result.violations.push(...problems.map((p) => `not converged within ${boundMs / 1000} s: ${p}`));
      result.times.push(Date.now() - injectedAt);
      console.log(`[chaos] ${fault}: not converged:\n  ${problems.join('\n  ')}\n${warningsAbout(problems, served?.log() ?? '')}`);
      return result;
    }
    await sleep(SAMPLE_MS);
  }
}

/**
 * State changes arrive before, during and after the fault (so the server has to pick up what
 * changed while it was broken and what changed after), then the desired state holds still and
 * convergence is timed from the fault.
 */
async function underChurn(fault: string, inject: () => Promise<void>): Promise<FaultResult> {
  const t = traffic as WebhookTraffic;
  t.mode = 'churn';
  await sleep(1_000 + random() * 2_000);
  const injected = Date.now();
  await inject();
  const recovered = Date.now();
  await sleep(500 + random() * 1_500);
  t.mode = 'quiet';
  return converge(fault, injected, recovered);
}

function expectNoViolations(result: FaultResult): void {
  expect(result.violations, `${result.fault}: ${result.violations.slice(0, 20).join('\n')}`).toEqual([]);
}

beforeAll(async () => {
  assertRoot();
  console.log(`[chaos] seed ${SEED} (replay with CHAOS_SEED=${SEED})`);
  [postgres, engine] = await Promise.all([startChaosPostgres(), startChaosDocker()]);
  served = await startServe(serveOptions());
  replicas = [served];
  expectedAlive = new Set(replicas);
  database = openPostgres(postgres.url, 5);

  const run = randomBytes(3).toString('hex');
  for (let i = 0; i < ACTIVE_CUSTOMERS + LEAVERS; i++) {
    const name = `chaos-${run}-${String(i).padStart(2, '0')}`;
    customers.push({
      name,
      stripeCustomer: `cus_chaos_${run}_${i}`,
      subscription: `sub_chaos_${run}_${i}`,
      session: `cs_chaos_${run}_${i}`,
    });
    // A signup waiting for payment, as the signup API leaves it; the checkout webhook activates it.
    await sql`
      INSERT INTO customers (name, email, display_name, state, instructions, stripe_checkout_session_id, pending_expires_at)
      VALUES (${name}, ${`${name}@example.com`}, ${`Chaos ${i}`}, 'pending',
              ${`I test resilience. ${marker(name)}\n- survive faults`}, ${`cs_chaos_${run}_${i}`}, now() + interval '1 day')
    `.execute(database.db);
  }
  traffic = new WebhookTraffic({
    customers,
    secret: WEBHOOK_SECRET,
    targets: () => replicas.filter(alive).map((r) => r.url),
    random,
  });
  ctx = {
    database,
    docker: engine.docker,
    served,
    traffic,
    names: customers.map((c) => c.name),
    baselineIds: new Map(),
    ledgerVerified: new Set(),
  };
  const started = Date.now();
  for (const c of customers) traffic.activate(c);
  traffic.start();
  // Crashes between steps (port reserved, container created, not started, route missing): two
  // kill -9 while the customers are first provisioned.
  for (let i = 0; i < PROVISIONING_KILLS; i++) {
    await sleep(1_000 + random() * 3_000);
    await served.stopProcess({ kill: true });
    await served.restart();
  }
  const initial = await converge(`initial provisioning (${customers.length} customers, ${PROVISIONING_KILLS} kill -9 during it)`, started, Date.now(), 180_000);
  expectNoViolations(initial);
  const world = await observeWorld(ctx, { unackedBefore: 0 });
  for (const [name, id] of world.containerIds) ctx.baselineIds.set(name, id);
  expect(ctx.baselineIds.size).toBe(ACTIVE_CUSTOMERS + LEAVERS);
}, 300_000);

afterAll(async () => {
  traffic?.stopGenerating();
  writeReport();
  await standby?.stopProcess({ kill: true }).catch(() => {});
  await served?.stop().catch(() => {});
  await database?.close().catch(() => {});
  await engine?.stop().catch(() => {});
  await postgres?.stop().catch(() => {});
}, 120_000);

describe('chaos', () => {
  it('webhooks delivered twice and out of order (a burst of state changes, a subscription ending)', async () => {
    const t = traffic as WebhookTraffic;
    t.mode = 'churn';
    t.cancel(customers[ACTIVE_CUSTOMERS] as BillingCustomer);
    await sleep(8_000);
    t.mode = 'quiet';
    const ended = Date.now();
    expectNoViolations(await converge('webhooks twice + out of order', ended, ended));
  });

  it(`kill -9 the controller at random moments (${KILLS} times)`, async () => {
    const t = traffic as WebhookTraffic;
    const s = served as Served;
    let kills = 0;
    // The other leaver's subscription ends as the first kill lands (teardown interrupted).
    t.cancel(customers[ACTIVE_CUSTOMERS + 1] as BillingCustomer);
    while (kills < KILLS) {
      // Work in progress: state changes arrive while the controller dies.
      t.mode = 'churn';
      await sleep(random() * 3_000);
      const injected = Date.now();
      await s.stopProcess({ kill: true });
      kills++;
      await s.restart();
      // Sometimes again while it is starting up (initial resync, leader election).
      if (kills < KILLS && random() < 0.3) {
        await sleep(random() * 1_500);
        await s.stopProcess({ kill: true });
        kills++;
        await s.restart();
      }
      await sleep(random() * 1_500);
      t.mode = 'quiet';
      await converge('kill -9 controller', injected);
    }
    expectNoViolations(results.get('kill -9 controller') as FaultResult);
  });

  it('Caddy restarted empty', async () => {
    expectNoViolations(await underChurn('Caddy restarted empty', () => (served as Served).caddy.restartEmpty()));
  });

  it('Postgres restarted (change feed and leader election reconnect)', async () => {
    const s = served as Served;
    const logFrom = s.log().length;
    // Down for 3 s: webhooks meet 503 (and are retried), the leader loses its lock and stops.
    const result = await underChurn('Postgres restarted (down 3 s)', () => (postgres as ChaosPostgres).restart(3_000));
    const log = s.log().slice(logFrom);
    const said = new Set(log.split('\n').map((line) => /"msg":"([^"]*)"/.exec(line)?.[1]).filter((m) => m && /leader|lead|change feed|not stored|workers/i.test(m)));
    console.log(`[chaos] the server during the outage: ${[...said].join(' | ')}`);
    expectNoViolations(result);
  });

  it('two replicas on one database: the leader is killed, the standby takes over (twice)', async () => {
    const t = traffic as WebhookTraffic;
    const a = served as Served;
    standby = await startServe(serveOptions({ caddy: a.caddy, dataDir: a.dataDir, instance: a.instance }));
    const b = standby;
    replicas = [a, b];
    expectedAlive = new Set(replicas);
    for (let round = 0; round < 2; round++) {
      t.mode = 'churn';
      await sleep(1_000 + random() * 2_000);
      const leaders: Served[] = [];
      for (const r of replicas) {
        const body = (await (await fetch(`${r.url}/readyz`)).json()) as { leader?: boolean };
        if (body.leader) leaders.push(r);
      }
      expect(leaders, 'exactly one replica leads before the kill').toHaveLength(1);
      const leader = leaders[0] as Served;
      const injected = Date.now();
      await leader.stopProcess({ kill: true });
      expectedAlive.delete(leader);
      // The new leader must follow changes made after the takeover too.
      await sleep(random() * 1_500);
      t.mode = 'quiet';
      const result = await converge('leader killed, standby takes over', injected);
      // The killed one comes back as the standby.
      await leader.restart();
      expectedAlive.add(leader);
      expectNoViolations(result);
    }
    await b.stopProcess();
    expectedAlive.delete(b);
    replicas = [a];
    standby = undefined;
    const settled = Date.now();
    expectNoViolations(await converge('standby stopped (SIGTERM)', settled));
  });

  it('Docker engine restarted (containers restart in place; the event stream reconnects)', async () => {
    const result = await underChurn('Docker engine restarted', async () => {
      const { downMs } = await (engine as ChaosDocker).restart();
      console.log(`[chaos] Docker engine was down ${downMs} ms`);
    });
    // Only the reconnected event stream tells the controller about this within the bound
    // (the full resync is 300 s away): a container stopped behind its back.
    const victim = customers.find((c) => (traffic as WebhookTraffic).expected(c.name).state === 'active') as BillingCustomer;
    const injected = Date.now();
    await (engine as ChaosDocker).docker.getContainer(ctx.baselineIds.get(victim.name) as string).stop({ t: 1 });
    const after = await converge('container stopped after the engine restart', injected);
    expectNoViolations(result);
    expectNoViolations(after);
  });

  it('drift while the controller is down (the checks see it; the controller repairs it)', async () => {
    const s = served as Served;
    const t = traffic as WebhookTraffic;
    const docker = (engine as ChaosDocker).docker;
    await s.stopProcess({ kill: true });
    // Victims the checker has never seen replaced on purpose (a ContainerUnstartable event from an
    // earlier fault makes it accept any later replacement silently, so it could not judge one).
    const replacedBefore = await sql<{ customer: string }>`
      SELECT DISTINCT customer FROM customer_events WHERE reason = 'ContainerUnstartable'
    `.execute((database as DatabaseHandle).db);
    const judged = new Set(replacedBefore.rows.map((r) => r.customer));
    const active = customers.filter((c) => t.expected(c.name).state === 'active' && !judged.has(c.name)).map((c) => c.name);
    const [stopped, unrouted, removed] = active.slice(0, 3) as [string, string, string];
    expect(active.length).toBeGreaterThanOrEqual(3);
    await docker.getContainer(ctx.baselineIds.get(stopped) as string).stop({ t: 1 });
    const deleted = await s.caddy.admin(`/id/blytz-${unrouted}`, { method: 'DELETE' });
    expect(deleted.status).toBe(200);
    await docker.getContainer(ctx.baselineIds.get(removed) as string).remove({ force: true });

    // The checker is not blind: it sees each sabotage.
    const broken = await observeWorld(ctx, { unackedBefore: 0 });
    const about = (name: string, what: string) => broken.problems.some((p) => p.startsWith(`${name} `) && p.includes(what));
    expect(about(stopped, 'container exited'), broken.problems.join('\n')).toBe(true);
    expect(about(unrouted, 'no route'), broken.problems.join('\n')).toBe(true);
    expect(about(removed, 'no container'), broken.problems.join('\n')).toBe(true);

    const injected = Date.now();
    await s.restart();
    const result = await converge('drift while controller down', injected);
    // The removed container had to be created again, and only that one: the checker says so.
    const recreated = result.violations.filter((v) => v.startsWith(`${removed}: container recreated`));
    expect(recreated, result.violations.join('\n')).toHaveLength(1);
    result.violations = result.violations.filter((v) => !recreated.includes(v));
    const world = await observeWorld(ctx, { unackedBefore: 0 });
    ctx.baselineIds.set(removed, world.containerIds.get(removed) as string);
    expectNoViolations(result);
  });

  it('no webhook lost: every event sent is in the ledger, once', async () => {
    const t = traffic as WebhookTraffic;
    t.stopGenerating();
    const stopped = Date.now();
    const result = await converge('all webhooks delivered', stopped);
    const ids = [...t.events.keys()];
    const found = await sql<{ n: number }>`
      SELECT count(*)::int AS n FROM webhook_events WHERE event_id = ANY(${ids}::text[])
    `.execute((database as DatabaseHandle).db);
    if (found.rows[0]?.n !== ids.length) result.violations.push(`ledger has ${found.rows[0]?.n} of ${ids.length} events sent`);
    // Every event was applied, found unchanged, stale (older than one applied), ignored, or for a
    // customer nobody knows; never stuck half-way or tied to the wrong customer.
    const outcomes = await sql<{ outcome: string; n: number }>`
      SELECT outcome, count(*)::int AS n FROM webhook_events WHERE event_id = ANY(${ids}::text[]) GROUP BY 1 ORDER BY 2 DESC
    `.execute((database as DatabaseHandle).db);
    ledgerOutcomes = Object.fromEntries(outcomes.rows.map((r) => [r.outcome, r.n]));
    for (const bad of ['received', 'id_conflict', 'foreign_subscription']) {
      if (ledgerOutcomes[bad]) result.violations.push(`${ledgerOutcomes[bad]} ledger row(s) with outcome ${bad}`);
    }
    if (t.stats.rejected.length > 0) result.violations.push(...t.stats.rejected.map((r) => `rejected: ${r}`));
    expectNoViolations(result);
  });
});

function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

function writeReport(): void {
  const secs = (ms: number) => (Number.isNaN(ms) ? '-' : `${(ms / 1000).toFixed(1)} s`);
  const lines = [
    '| fault | runs | convergence p50 | convergence max | violations |',
    '|---|---:|---:|---:|---:|',
    ...[...results.values()].map(
      (r) => `| ${r.fault} | ${r.times.length} | ${secs(percentile(r.times, 50))} | ${secs(r.times.length > 0 ? Math.max(...r.times) : Number.NaN)} | ${r.violations.length} |`,
    ),
  ];
  const stats = traffic?.stats;
  const violations = [...results.values()].flatMap((r) => r.violations.map((v) => `- ${r.fault}: ${v}`));
  const report = [
    '# Chaos suite',
    '',
    `Run ${new Date(suiteStarted).toISOString()}, ${((Date.now() - suiteStarted) / 1000).toFixed(0)} s, seed ${SEED}; ` +
      `${ACTIVE_CUSTOMERS} active customers (+${LEAVERS} whose subscriptions end); convergence bound ${BOUND_MS / 1000} s after the faulted part is back, ` +
      `time counted from the fault. Machine: ${cpus().length} cores, load average ${loadAtStart.toFixed(1)} at the start.`,
    '',
    ...lines,
    '',
    stats
      ? `Webhooks: ${stats.events} events, ${stats.deliveries} deliveries (every event twice, out of order), ${stats.retries} retries; answers ${JSON.stringify(stats.byStatus)} (0 = no connection).`
      : '',
    Object.keys(ledgerOutcomes).length > 0 ? `Ledger outcomes of those events: ${JSON.stringify(ledgerOutcomes)}.` : '',
    '',
    ...(violations.length > 0 ? ['## Violations', '', ...violations.slice(0, 200)] : []),
    '',
  ].join('\n');
  console.log(`\n${report}`);
  mkdirSync(join(ROOT, 'test-results'), { recursive: true });
  writeFileSync(join(ROOT, 'test-results/chaos.md'), report);
}
