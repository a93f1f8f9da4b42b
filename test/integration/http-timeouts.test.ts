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
 * configured timeouts. Node checks its timeouts only every 30 s unless told otherwise, so with
 * the default sweep these sockets would stay open for up to 30 s: each test here waits at most
 * 10 s for the server to close a socket whose timeout is a second or less.
 */

const TIMEOUTS = { headersMs: 600, requestMs: 1_200, keepAliveMs: 500 };
const DEADLINE_MS = 10_000;

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
  return new Promise((resolve, reject) => {
    const socket: Socket = connect(port, '127.0.0.1', () => {
      for (const chunk of chunks) socket.write(chunk);
    });
    let answer = '';
    socket.on('data', (data) => {
      answer += data.toString('latin1');
    });
    socket.on('error', () => {}); // a reset counts as closed too
    const deadline = setTimeout(() => {
      socket.destroy();
      reject(new Error(`the server kept a stalled socket open for ${DEADLINE_MS} ms`));
    }, DEADLINE_MS);
    socket.on('close', () => {
      clearTimeout(deadline);
      resolve({ answer });
    });
  });
}

describe('HTTP timeouts', () => {
  it('checks connections ten times per shortest timeout (Node default: every 30 s)', () => {
    expect(sweepIntervalMs(DEFAULT_HTTP_TIMEOUTS)).toBe(1_000);
    expect(sweepIntervalMs(TIMEOUTS)).toBe(60);
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
