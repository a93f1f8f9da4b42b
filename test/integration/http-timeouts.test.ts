import { connect, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express, { Router } from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createHttpApp } from '../../src/http/app.js';
import { createHttpServer, DEFAULT_HTTP_TIMEOUTS, sweepIntervalMs } from '../../src/http/http-server.js';
import { HealthChecks } from '../../src/observability/health.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';

/**
 * Slow clients (slowloris: headers or a body trickled in, or never finished) are cut off at the
 * configured timeouts. Node checks its timeouts only every 30 s unless told otherwise; the server
 * is built with a sweep ten times per shortest timeout, which the first test reads back from it.
 * The others wait for the server to close a stalled socket, with no time bound of their own
 * beyond the test's timeout: how soon the close comes on a busy machine is not what they prove.
 */

const TIMEOUTS = { headersMs: 600, requestMs: 1_200, keepAliveMs: 500 };

let server: Server;
let port: number;

beforeAll(async () => {
  const app = createHttpApp({
    logger: createLogger({ level: 'silent' }),
    metrics: new Metrics({ defaultMetrics: false }),
    health: new HealthChecks(),
    readiness: { breakers: () => ({}), leader: () => true },
    // A route that reads its body, like signup and the webhook.
    routers: [Router().post('/echo', express.json(), (req, res) => void res.json(req.body))],
  });
  server = createHttpServer(app, TIMEOUTS);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
});

afterAll(async () => {
  server.closeAllConnections();
  await new Promise((resolve) => server.close(resolve));
});

/** Opens a socket, writes `chunks`, and resolves with what the server sent once it closed the socket. */
function heldOpen(chunks: string[]): Promise<{ answer: string }> {
  return new Promise((resolve) => {
    const socket: Socket = connect(port, '127.0.0.1', () => {
      for (const chunk of chunks) socket.write(chunk);
    });
    let answer = '';
    socket.on('data', (data) => {
      answer += data.toString('latin1');
    });
    socket.on('error', () => {}); // a reset counts as closed too
    socket.on('close', () => resolve({ answer }));
  });
}

describe('HTTP timeouts', () => {
  it('checks connections ten times per shortest timeout (Node default: every 30 s)', () => {
    expect(sweepIntervalMs(DEFAULT_HTTP_TIMEOUTS)).toBe(1_000);
    expect(sweepIntervalMs(TIMEOUTS)).toBe(60);
    // What the server was built with (Node keeps its options as properties of the server).
    expect(server).toMatchObject({ headersTimeout: 600, requestTimeout: 1_200, keepAliveTimeout: 500, connectionsCheckingInterval: 60 });
  });

  it('answers 408 and closes a socket whose headers never finish', async () => {
    const { answer } = await heldOpen(['GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: 1']);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('answers 408 and closes a socket whose body never finishes', async () => {
    const { answer } = await heldOpen([
      'POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n',
      '{"a":',
    ]);
    expect(answer).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('still serves a prompt request', async () => {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`);
    expect(res.status).toBe(200);
  });
});
