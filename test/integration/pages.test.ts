import { readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PriceSource } from '../../src/billing/price-catalog.js';
import { createHttpApp } from '../../src/http/app.js';
import { createPagesRouter, escapeHtml, markup } from '../../src/http/pages.js';
import { HealthChecks } from '../../src/observability/health.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { projectRoot } from '../../src/paths.js';

/** The customer pages as the real express app serves them: HTML, escaping, headers, assets. */

const HOSTILE = `"><script>alert(1)</script><img src=x onerror=alert(2)>'\``;
let server: Server;
let base: string;

beforeAll(async () => {
  const app = createHttpApp({
    logger: createLogger({ level: 'silent' }),
    metrics: new Metrics({ defaultMetrics: false }),
    health: new HealthChecks(),
    readiness: { breakers: () => ({}), leader: () => false },
    routers: [createPagesRouter()],
  });
  server = createServer(app);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
});

async function get(path: string): Promise<{ status: number; body: string; headers: Headers }> {
  const res = await fetch(`${base}${path}`);
  return { status: res.status, body: await res.text(), headers: res.headers };
}

const ids = (page: string, pattern: RegExp) => [...page.matchAll(pattern)].map((m) => m[1] as string);

/** Every form control has a <label for>, and every aria-describedby names an element on the page. */
function expectAccessibleForm(page: string): void {
  const controls = ids(page, /<(?:input|select|textarea)\b[^>]*\bid="([^"]+)"/g);
  expect(controls.length).toBeGreaterThan(0);
  const labelled = new Set(ids(page, /<label\b[^>]*\bfor="([^"]+)"/g));
  for (const id of controls) expect(labelled, `label for #${id}`).toContain(id);
  const present = new Set(ids(page, /\bid="([^"]+)"/g));
  for (const list of ids(page, /aria-describedby="([^"]+)"/g)) {
    for (const id of list.split(' ')) expect(present, `aria-describedby target #${id}`).toContain(id);
  }
}

function expectPageBasics(page: { status: number; body: string; headers: Headers }): void {
  expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
  expect(page.headers.get('content-security-policy')).toContain("default-src 'self'");
  expect(page.headers.get('x-content-type-options')).toBe('nosniff');
  expect(page.headers.get('x-frame-options')).toBe('DENY');
  expect(page.headers.get('referrer-policy')).toBe('no-referrer');
  expect(page.body).toMatch(/^<!doctype html>\n<html lang="en">/);
  expect(page.body).toContain('<meta name="viewport" content="width=device-width, initial-scale=1">');
  // The CSP allows no inline script: every <script> has a same-origin src.
  expect(page.body).not.toMatch(/<script(?![^>]*\bsrc="\/assets\/)/);
  // No event-handler attribute: with quoted values blanked, no `on...=` is left in any tag.
  expect(page.body.replace(/"[^"]*"/g, '""')).not.toMatch(/<[^>]*\son[a-z]+=/i);
}

describe('customer pages', () => {
  it('GET / is the landing page with an email form', async () => {
    const page = await get('/');
    expect(page.status).toBe(200);
    expectPageBasics(page);
    expectAccessibleForm(page.body);
    expect(page.body).toContain('<script type="module" src="/assets/landing.js"></script>');
    expect(page.body).toMatch(/<input id="email" name="email" type="email"/);
    expect(page.body).not.toContain('payment was cancelled');
  });

  it('GET / shows the plan before asking for anything; without Stripe it says signups are closed', async () => {
    const page = await get('/');
    expect(page.body).toMatch(/<h2 id="plan-name" class="plan-name">Personal<\/h2>/);
    expect(page.body).toContain('Signups are closed on this server for now: payments are not set up yet.');
    expect(page.body).toContain('1.5 GiB of memory, 1 CPU');
    expect(page.body.indexOf('id="plan-name"')).toBeLessThan(page.body.indexOf('id="start"'));
  });

  it('GET / with a price source: its price, escaped; a clear line while the price is not known', async () => {
    let price: Awaited<ReturnType<PriceSource['current']>>;
    const pricing: PriceSource = { current: async () => price };
    const app = createHttpApp({
      logger: createLogger({ level: 'silent' }),
      metrics: new Metrics({ defaultMetrics: false }),
      health: new HealthChecks(),
      readiness: { breakers: () => ({}), leader: () => false },
      routers: [createPagesRouter({ pricing })],
    });
    const priced = createServer(app);
    await new Promise<void>((resolve) => priced.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(priced.address() as AddressInfo).port}/`;
    try {
      price = { productName: HOSTILE, unitAmount: 4900, currency: 'usd', interval: 'year', intervalCount: 1 };
      const body = await (await fetch(url)).text();
      expect(body).toContain('<strong class="amount">$49.00</strong> <span class="period">per year</span>');
      expect(body).toContain(escapeHtml(HOSTILE));
      expect(body).not.toContain('<script>alert(1)');
      price = undefined; // Stripe unreachable and nothing cached
      const unknown = await (await fetch(url)).text();
      expect(unknown).toContain('The price is shown on the secure payment page before you pay.');
      expect(unknown).not.toContain('Signups are closed');
    } finally {
      await new Promise<void>((resolve) => {
        priced.close(() => resolve());
        priced.closeAllConnections();
      });
    }
  });

  it('offers "Blytz default" model access only where it is offered; otherwise asks for a key of the customer’s own', async () => {
    const offered = await get('/configure');
    expect(offered.body).toContain('<option value="">Blytz default</option>');
    expect(offered.body).toContain('<legend>Your own AI model (optional)</legend>');
    expect((await get('/')).body).toContain('<li>AI model access included</li>');

    const app = createHttpApp({
      logger: createLogger({ level: 'silent' }),
      metrics: new Metrics({ defaultMetrics: false }),
      health: new HealthChecks(),
      readiness: { breakers: () => ({}), leader: () => false },
      routers: [createPagesRouter({ includedModels: { offered: false, reason: 'the model gateway is off' } })],
    });
    const without = createServer(app);
    await new Promise<void>((resolve) => without.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(without.address() as AddressInfo).port}`;
    try {
      const configure = await (await fetch(`${url}/configure`)).text();
      expect(configure).not.toContain('Blytz default');
      expect(configure).toContain('<legend>Your AI model</legend>');
      expect(configure).toContain('This server does not include model access');
      expect(configure).toMatch(/<select id="modelProvider" name="modelProvider" required/);
      expect(configure).toMatch(/<input id="modelApiKey"[^>]* required /);
      expectAccessibleForm(configure);
      const landing = await (await fetch(`${url}/`)).text();
      expect(landing).toContain('AI model not included: you bring an API key from your own model provider account');
      expect(landing).not.toContain('AI model access included');
    } finally {
      await new Promise<void>((resolve) => {
        without.close(() => resolve());
        without.closeAllConnections();
      });
    }
  });

  it('GET /?checkout=cancelled says nothing was charged; other values are not echoed', async () => {
    expect((await get('/?checkout=cancelled')).body).toContain('The payment was cancelled and nothing was charged');
    const hostile = await get(`/?checkout=${encodeURIComponent(HOSTILE)}`);
    expect(hostile.body).not.toContain('alert(');
  });

  it('GET /configure has every signup field, the BotFather how-to, and escapes the prefilled email', async () => {
    const page = await get(`/configure?email=${encodeURIComponent(HOSTILE)}`);
    expect(page.status).toBe(200);
    expectPageBasics(page);
    expectAccessibleForm(page.body);
    for (const id of ['email', 'name', 'instructions', 'telegramBotToken', 'modelProvider', 'modelApiKey']) {
      expect(page.body).toContain(`id="${id}"`);
      expect(page.body).toContain(`id="${id}-error"`);
    }
    expect(page.body).toContain('https://t.me/BotFather');
    expect(page.body).toMatch(/<input id="telegramBotToken"[^>]*type="password"/);
    expect(page.body).toContain(
      `value="&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;&#39;&#96;"`,
    );
    expect(page.body).not.toContain('<script>alert');
    expect(page.body).not.toContain('<img src=x');
  });

  it('GET /status/:name is a no-store shell that knows the name and never writes the token into the HTML', async () => {
    const token = 'tok_secret_0123456789abcdef';
    const page = await get(`/status/ada-example-com?token=${token}`);
    expect(page.status).toBe(200);
    expectPageBasics(page);
    expectAccessibleForm(page.body);
    expect(page.headers.get('cache-control')).toBe('no-store');
    expect(page.body).toContain('data-customer="ada-example-com"');
    expect(page.body).not.toContain(token);
    for (const step of ['payment', 'workspace', 'assistant', 'reachable']) expect(page.body).toContain(`data-step="${step}"`);
    expect(page.body).toContain('id="code"');
    expect(page.body).toMatch(/id="summary" role="status"/);
  });

  it('GET /status/<hostile> is a 404 page that does not echo the path', async () => {
    for (const name of [encodeURIComponent(HOSTILE), 'UPPER', 'a'.repeat(64), '-leading-dash']) {
      const page = await get(`/status/${name}?token=x`);
      expect(page.status).toBe(404);
      expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
      expect(page.headers.get('cache-control')).toBe('no-store');
      expect(page.body).toContain('This status link is not valid');
      expect(page.body).not.toContain('alert(');
      expect(page.body).not.toContain('UPPER');
    }
  });

  it('serves the assets with their types, and nothing outside the assets folder', async () => {
    const js = await get('/assets/status.js');
    expect(js.status).toBe(200);
    expect(js.headers.get('content-type')).toMatch(/^(text|application)\/javascript/);
    expect(js.headers.get('x-content-type-options')).toBe('nosniff');
    expect((await get('/assets/style.css')).headers.get('content-type')).toMatch(/^text\/css/);
    expect((await get('/assets/forms.js')).status).toBe(200);
    expect((await get('/assets/missing.js')).status).toBe(404);
    for (const path of ['/assets/../package.json', '/assets/%2e%2e/package.json', '/assets/..%2fpackage.json', '/assets/']) {
      const res = await get(path);
      expect(res.status, path).toBe(404);
      expect(res.body).not.toContain('"name": "blytz"');
    }
  });

  it('every page links only assets that exist', async () => {
    const assets = new Set(readdirSync(join(projectRoot(), 'web', 'assets')));
    for (const path of ['/', '/configure', '/status/ada']) {
      const page = await get(path);
      for (const asset of ids(page.body, /(?:src|href)="\/assets\/([^"]+)"/g))
        expect(assets, `${path} -> ${asset}`).toContain(asset);
    }
  });

  it('the page scripts write text only (no innerHTML and friends)', () => {
    const dir = join(projectRoot(), 'web', 'assets');
    for (const file of readdirSync(dir).filter((f) => f.endsWith('.js'))) {
      const source = readFileSync(join(dir, file), 'utf8');
      expect(source, file).not.toMatch(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function/);
    }
  });
});

describe('markup template tag', () => {
  it('escapes every interpolated value, in text and in attributes', () => {
    const out = markup`<p title="${HOSTILE}">${HOSTILE}</p>`.value;
    expect(out).toBe(`<p title="${escapeHtml(HOSTILE)}">${escapeHtml(HOSTILE)}</p>`);
    expect(out).not.toMatch(/<script|<img|"></);
    expect(escapeHtml(`&<>"'\``)).toBe('&amp;&lt;&gt;&quot;&#39;&#96;');
  });

  it('nests templates and arrays without escaping twice, and drops empty values', () => {
    const items = ['a&b', '<c>'].map((x) => markup`<li>${x}</li>`);
    expect(markup`<ul>${items}</ul>${undefined}${null}${false}`.value).toBe('<ul><li>a&amp;b</li><li>&lt;c&gt;</li></ul>');
    expect(markup`${0}`.value).toBe('0');
  });
});
