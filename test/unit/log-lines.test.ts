import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { logAction } from '../../src/controller/customer/action-log.js';
import { Router } from 'express';
import { addToRequestLine, createHttpApp } from '../../src/http/app.js';
import { HealthChecks } from '../../src/observability/health.js';
import { createLogger, logFormatFor, type LogFormat, type Logger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { reportSweep } from '../../src/proxy/caddy/route-sweep.js';
import { waitFor } from '../support/wait-for.js';

/** The lines a logger wrote, as text, and parsed when JSON. */
function capture(format: LogFormat = 'json', level = 'trace') {
  const chunks: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer | string, _encoding, callback) {
      chunks.push(chunk.toString());
      callback();
    },
  });
  const logger = createLogger({ level, destination, format });
  const text = () => chunks.join('');
  const lines = () =>
    text()
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { level: number; msg: string; [key: string]: unknown });
  return { logger, text, lines };
}

const INFO = 30;
const WARN = 40;
const DEBUG = 20;

describe('action lines (one per action the controller takes on the world)', () => {
  it('an action is one info line naming the customer, with the event reason', () => {
    const { logger, lines } = capture();
    logAction(logger, {
      customer: 'alice-example-com',
      type: 'Normal',
      reason: 'ContainerCreated',
      message: 'container created and started on 127.0.0.1:30001',
    });
    expect(lines()).toEqual([
      expect.objectContaining({
        level: INFO,
        customer: 'alice-example-com',
        reason: 'ContainerCreated',
        msg: 'alice-example-com: container created and started on 127.0.0.1:30001',
      }),
    ]);
  });

  it('a correction says which drift it corrects, once', () => {
    const { logger, lines } = capture();
    const route = { customer: 'alice', type: 'Normal', reason: 'RouteReady', drift: 'route_missing' } as const;
    logAction(logger, { ...route, message: 'alice.blytz.localhost routes to 127.0.0.1:30001' });
    logAction(logger, {
      customer: 'ghost',
      type: 'Normal',
      reason: 'ContainerRemoved',
      message: 'container removed (orphan container)',
      drift: 'orphan_container',
    });
    expect(lines().map((l) => [l.msg, l['drift']])).toEqual([
      ['alice: alice.blytz.localhost routes to 127.0.0.1:30001 (corrects route missing)', 'route_missing'],
      ['ghost: container removed (orphan container)', 'orphan_container'],
    ]);
  });

  it('a Warning event (an unhealthy container restarted) is a warn line', () => {
    const { logger, lines } = capture();
    logAction(logger, {
      customer: 'bob',
      type: 'Warning',
      reason: 'ContainerRestarted',
      message: 'container was unhealthy and was restarted',
      drift: 'container_unhealthy',
    });
    expect(lines()[0]).toMatchObject({ level: WARN, reason: 'ContainerRestarted' });
  });
});

describe('route sweep lines and drift counts', () => {
  it("counts what the sweep repaired itself, and leaves customers' drift to the reconciler", async () => {
    const { logger, lines } = capture();
    const metrics = new Metrics({ defaultMetrics: false });
    reportSweep(
      {
        restored: false,
        written: 0,
        drift: [{ customer: 'alice', kind: 'route_missing' }],
        repaired: [{ kind: 'server_block', detail: 'listen [":80"] (want [":8081"])' }],
      },
      metrics,
      logger,
    );
    const text = await metrics.registry.getSingleMetricAsString('blytz_drift_corrections_total');
    expect(text).toMatch(/^blytz_drift_corrections_total\{kind="server_block"\} 1$/m);
    // The deleted route is counted by the reconciler when it writes it back: not here too.
    expect(text).not.toContain('route_missing');
    expect(lines().map((l) => [l.level, l.msg])).toEqual([
      [WARN, 'caddy: listen [":80"] (want [":8081"]); repaired'],
      [DEBUG, 'route sweep found alice (route missing): enqueued'],
    ]);
  });

  it('a restored server block counts every route it put back', async () => {
    const { logger } = capture();
    const metrics = new Metrics({ defaultMetrics: false });
    reportSweep(
      { restored: true, written: 3, drift: [], repaired: [{ kind: 'server_block', detail: 'the server block was missing' }] },
      metrics,
      logger,
    );
    const text = await metrics.registry.getSingleMetricAsString('blytz_drift_corrections_total');
    expect(text).toMatch(/kind="route_missing"\} 3$/m);
    expect(text).toMatch(/kind="server_block"\} 1$/m);
  });
});

describe('request lines', () => {
  let server: Server | undefined;
  afterEach(async () => {
    server?.closeAllConnections(); // fetch keeps its connections open for seconds
    await new Promise((resolve) => server?.close(resolve));
    server = undefined;
  });

  /** The app with `routers` on a free port; its base URL. */
  async function serve(logger: Logger, routers: Router[] = []): Promise<string> {
    const app = createHttpApp({
      logger,
      metrics: new Metrics({ defaultMetrics: false }),
      health: new HealthChecks(),
      readiness: { breakers: () => ({}), leader: () => true },
      routers,
    });
    server = createServer(app);
    await new Promise<void>((resolve) => server!.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  }

  it('probes and scrapes are debug; everything else is info, with method, route and status in the message', async () => {
    const { logger, lines } = capture();
    const base = await serve(logger);
    for (const path of ['/healthz', '/readyz', '/metrics', '/nowhere']) await (await fetch(`${base}${path}`)).text();
    const requests = lines().filter((l) => typeof l['route'] === 'string');
    expect(requests.map((l) => [l.level, l.msg])).toEqual([
      [DEBUG, 'GET /healthz 200'],
      [DEBUG, 'GET /readyz 200'],
      [DEBUG, 'GET /metrics 200'],
      [INFO, 'GET unmatched 404'],
    ]);
  });

  it('a route adds what it did to its request line: one line per request, also when the client goes before the answer', async () => {
    const { logger, lines } = capture();
    let release: () => void = () => {};
    const held = new Promise<void>((resolve) => (release = resolve));
    const router = Router();
    router.post('/api/things', (_req, res) => {
      addToRequestLine(res, { thing: 't-1', outcome: 'applied' });
      res.json({ ok: true });
    });
    let arrived = false;
    let answered = false;
    router.post('/api/slow', async (_req, res) => {
      arrived = true;
      await held;
      res.json({ ok: true });
      answered = true;
    });
    const base = await serve(logger, [router]);
    await (await fetch(`${base}/api/things`, { method: 'POST' })).text();
    await waitFor(() => lines().length === 1);
    expect(lines()[0]).toMatchObject({ level: INFO, msg: 'POST /api/things 200', route: '/api/things', status: 200, thing: 't-1', outcome: 'applied' });

    const gone = new AbortController();
    const slow = fetch(`${base}/api/slow`, { method: 'POST', signal: gone.signal }).catch(() => 'aborted');
    await waitFor(() => arrived);
    gone.abort();
    expect(await slow).toBe('aborted');
    await waitFor(() => lines().length === 2);
    expect(lines()[1]).toMatchObject({ level: INFO, route: '/api/slow', aborted: true, msg: 'POST /api/slow: the client went before the answer' });
    release();
    await waitFor(() => answered);
    expect(lines()).toHaveLength(2); // the answer nobody received adds no line
  });

  it('at the default level the probes leave no line', async () => {
    const { logger, text } = capture('json', 'info');
    const base = await serve(logger);
    for (let i = 0; i < 5; i++) await (await fetch(`${base}/readyz`)).text();
    expect(text()).toBe('');
  });
});

describe('log format', () => {
  it('is pretty on a terminal and JSON anywhere else', () => {
    expect(logFormatFor({ isTTY: true })).toBe('pretty');
    expect(logFormatFor({ isTTY: false })).toBe('json');
    expect(logFormatFor({})).toBe('json');
  });

  it('pretty lines are one readable line each, time, level and message first, secrets still masked', () => {
    const { logger, text } = capture('pretty');
    logAction(logger, { customer: 'alice', type: 'Normal', reason: 'ContainerStarted', message: 'container started' });
    logger.warn({ dependency: 'stripe' }, 'stripe call failed with key sk_live_51HqQwErTyUiOpAsDfGhJkLzXcVbNm');
    const out = text().split('\n').filter(Boolean);
    expect(out).toHaveLength(2);
    expect(out[0]).toMatch(
      /^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: alice: container started \{"customer":"alice","reason":"ContainerStarted"\}$/,
    );
    expect(out[1]).toMatch(
      /^\[\d\d:\d\d:\d\d\.\d{3}\] WARN: stripe call failed with key \[REDACTED\] \{"dependency":"stripe"\}$/,
    );
    expect(text()).not.toContain('"service"');
  });
});
