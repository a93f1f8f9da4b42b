import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import express from 'express';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCaddyAskRouter, normaliseAskHost } from '../../src/http/caddy-ask.js';

const REACHABLE = new Set(['alice.blytz.test', 'bob-example-com.blytz.test']);
const asked: string[] = [];
let failNext = false;

let server: Server;
let base: string;

beforeAll(async () => {
  const app = express();
  app.use(
    createCaddyAskRouter({
      isReachableHost: async (host) => {
        asked.push(host);
        if (failNext) throw new Error('store down');
        return REACHABLE.has(host);
      },
    }),
  );
  server = await new Promise<Server>((resolve) => {
    const s = app.listen(0, '127.0.0.1', () => resolve(s));
  });
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

async function ask(query: string): Promise<number> {
  const res = await fetch(`${base}/api/caddy/ask${query}`);
  await res.text();
  return res.status;
}

describe('GET /api/caddy/ask', () => {
  it('answers 200 for a host that should be reachable, in any case and with a trailing dot', async () => {
    asked.length = 0;
    expect(await ask('?domain=alice.blytz.test')).toBe(200);
    expect(await ask('?domain=BOB-Example-Com.blytz.test.')).toBe(200);
    expect(asked).toEqual(['alice.blytz.test', 'bob-example-com.blytz.test']);
  });

  it('answers 404 for any other host', async () => {
    expect(await ask('?domain=mallory.blytz.test')).toBe(404);
    expect(await ask('?domain=alice.blytz.test.evil.com')).toBe(404);
  });

  it('answers 404 for malformed hosts without asking', async () => {
    asked.length = 0;
    const malformed = [
      '',
      '?domain=',
      '?domain=alice',
      '?domain=alice..blytz.test',
      '?domain=-alice.blytz.test',
      '?domain=alice.blytz.test:443',
      '?domain=alice_x.blytz.test',
      '?domain=%C3%A9vil.blytz.test',
      '?domain=*.blytz.test',
      '?domain=127.0.0.1%2F..',
      `?domain=${'a'.repeat(64)}.blytz.test`,
      `?domain=${Array.from({ length: 60 }, () => 'abcd').join('.')}`,
      '?domain=alice.blytz.test&domain=bob-example-com.blytz.test',
      '?domain[x]=alice.blytz.test',
    ];
    for (const query of malformed) expect(await ask(query), query).toBe(404);
    expect(asked).toEqual([]);
  });

  it('never answers 200 when the check itself fails', async () => {
    failNext = true;
    try {
      expect(await ask('?domain=alice.blytz.test')).toBe(500);
    } finally {
      failNext = false;
    }
  });
});

describe('normaliseAskHost', () => {
  it('accepts DNS names only', () => {
    expect(normaliseAskHost('Alice.Blytz.Test')).toBe('alice.blytz.test');
    expect(normaliseAskHost(['alice.blytz.test'])).toBeUndefined();
    expect(normaliseAskHost(undefined)).toBeUndefined();
    expect(normaliseAskHost('alice.blytz.test/x')).toBeUndefined();
  });
});
