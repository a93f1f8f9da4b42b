import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chown, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { botToken, WEBHOOK_SECRET } from '../support/billing-app.js';
import { instanceContainers, ROOT, type Served } from '../support/blytz-serve.js';
import { startSellingServe, type SellingServe } from '../support/selling-serve.js';
import {
  completedSessionObject,
  FAKE_PRICE,
  FAKE_PRICE_ID,
  
  signatureHeader,
  
  stripeEvent,
  subscriptionObject,
  type FakeSession,
  type FakeStripe,
} from '../support/fake-stripe.js';
import { botUsername } from '../support/fake-telegram.js';

/**
 * A person signs up in a real browser (Debian's headless Chromium driven by playwright-core),
 * against the built `blytz serve` with local stand-ins for Stripe and Telegram: mistakes shown
 * next to their fields, checkout, the signed webhook, live progress to Ready, Telegram pairing
 * approved inside the real container, then what a suspended and a cancelled customer see.
 * One screenshot per step goes to test-results/screenshots/.
 */

// The callbacks handed to page.evaluate run in the browser; the project compiles without the DOM
// library, so the little of it they use is declared here (module scope, nothing leaks).
declare const document: {
  querySelector(selector: string): { textContent: string | null } | null;
  documentElement: { scrollWidth: number };
  activeElement: { id: string } | null;
};
declare function getComputedStyle(element: unknown): { outlineStyle: string; outlineWidth: string };

const SHOTS = join(ROOT, 'test-results', 'screenshots');
const PHONE = { width: 375, height: 812 };
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const tag = randomBytes(3).toString('hex');
const email = `browser-${tag}@example.com`;
const BOT_TOKEN = botToken(Number.parseInt(tag, 16) % 90_000);
const MODEL_KEY = `sk-test-model-${randomBytes(8).toString('hex')}`;
// SLOW...: the stand-in holds the approval until the test releases it (the real CLI takes up to half a minute).
const PAIRING_CODE = `SLOW${randomBytes(2).toString('hex').toUpperCase()}`;

let stripe: FakeStripe;
let served: Served;
let world: SellingServe;
let userDataDir: string;
let context: BrowserContext;
let page: Page;
const visited: string[] = [];

// What the steps hand on to the next ones (the flow is one story, told in order).
let session: FakeSession;
let customerName: string;
const stripeIds = { customer: `cus_${tag}`, subscription: `sub_${tag}` };

beforeAll(async () => {
  world = await startSellingServe(WEBHOOK_SECRET);
  ({ stripe, served } = world);
  // No BLYTZ_PUBLIC_URL: the status link and Checkout's return addresses default to the
  // server's own address (served.url), as under `make run`.

  await mkdir(SHOTS, { recursive: true });
  userDataDir = await mkdtemp(join(tmpdir(), 'blytz-chromium-'));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: PHONE,
  });
  context.on('request', (request) => visited.push(request.url()));
  page = context.pages()[0] ?? (await context.newPage());
});

afterAll(async () => {
  await context?.close();
  if (userDataDir) await rm(userDataDir, { recursive: true, force: true });
  await world?.close();
});

async function shot(name: string): Promise<void> {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
}

/** Nothing sticks out sideways on a phone-width screen. */
async function expectFitsPhone(): Promise<void> {
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  expect(width).toBeLessThanOrEqual(PHONE.width);
}

const text = async (selector: string) => ((await page.textContent(selector)) ?? '').trim();

async function waitForText(selector: string, pattern: RegExp, timeout = 15_000): Promise<string> {
  await page.waitForFunction(
    ([sel, source, flags]) => new RegExp(source, flags).test(document.querySelector(sel)?.textContent ?? ''),
    [selector, pattern.source, pattern.flags] as const,
    { timeout },
  );
  return text(selector);
}

async function deliver(event: Record<string, unknown>): Promise<void> {
  const payload = JSON.stringify(event);
  const res = await fetch(`${served.url}/api/webhooks/stripe`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'stripe-signature': signatureHeader(payload, WEBHOOK_SECRET) },
    body: payload,
  });
  expect(res.status).toBe(200);
}

/** Field error shown next to the field, wired for screen readers. */
async function expectFieldError(id: string, pattern: RegExp): Promise<void> {
  expect(await text(`#${id}-error`)).toMatch(pattern);
  expect(await page.getAttribute(`#${id}`, 'aria-invalid')).toBe('true');
  expect(await page.getAttribute(`#${id}`, 'aria-describedby')).toContain(`${id}-error`);
}

describe('signing up in a browser', () => {
  it('landing: the plan and its price from Stripe, before anything is asked', async () => {
    await page.goto(`${served.url}/`);
    // Read from the (fake) Stripe's Price object: product name, amount, interval.
    expect(await text('#plan-name')).toBe(FAKE_PRICE.productName);
    expect(await text('.plan-price .amount')).toBe('€19.00');
    expect(await text('.plan-price .period')).toBe('per month');
    const main = await page.innerHTML('main');
    expect(main.indexOf('id="plan-name"')).toBeGreaterThan(-1);
    expect(main.indexOf('id="plan-name"')).toBeLessThan(main.indexOf('id="start"'));
    expect(stripe.requests.filter((r) => r.method === 'GET' && r.path === `/v1/prices/${FAKE_PRICE_ID}`)).toHaveLength(1);
    // Cached: a second view asks Stripe nothing.
    await page.reload();
    expect(await text('.plan-price .amount')).toBe('€19.00');
    expect(stripe.requests.filter((r) => r.path.startsWith('/v1/prices/'))).toHaveLength(1);
    await expectFitsPhone();
    await shot('00-landing-plan');
  });

  it('landing: an email, visible keyboard focus, then on to configure without the email in the URL', async () => {
    await page.goto(`${served.url}/`);
    expect(await text('h1')).toBe('Your own AI assistant, on Telegram');
    await expectFitsPhone();
    // Keyboard: the skip link first, then the brand, then the email field, with a visible ring.
    for (let i = 0; i < 3; i++) await page.keyboard.press('Tab');
    const focus = await page.evaluate(() => {
      const style = getComputedStyle(document.activeElement);
      return { id: document.activeElement?.id, outline: style.outlineStyle, width: style.outlineWidth };
    });
    expect(focus).toEqual({ id: 'email', outline: 'solid', width: '3px' });
    await page.keyboard.type(email);
    await shot('01-landing');
    await page.keyboard.press('Enter');
    await page.waitForURL(`${served.url}/configure`);
    expect(await page.inputValue('#email')).toBe(email);
  });

  it('configure: mistakes come back from the API next to their fields', async () => {
    await page.fill('#email', 'not-an-email');
    await page.fill('#name', '');
    await page.fill('#instructions', 'I run a small bakery.\n- order flour on Mondays');
    await page.fill('#telegramBotToken', '12345:too-short');
    // No key of the customer's own, on a server that does not include model access (this one
    // runs no model gateway): the page asks for one rather than selling an assistant that cannot answer.
    expect(await page.$('#modelProvider option[value=""]')).toBeNull();
    await page.click('#signup-submit');
    await waitForText('#form-error', /Please fix the fields marked below/);
    await expectFieldError('email', /^Must be an email address/);
    await expectFieldError('name', /^Must not be empty/);
    await expectFieldError('telegramBotToken', /^Must look like 123456789:/);
    await expectFieldError('modelApiKey', /^Is required: this server does not include model access/);
    expect(await page.getAttribute('#instructions', 'aria-invalid')).toBeNull();
    // Focus lands on the first field to fix.
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('email');
    await expectFitsPhone();
    await shot('02-configure-errors');
  });

  it('configure: fixed, it goes on to the (local) Stripe Checkout', async () => {
    await page.fill('#email', email);
    await page.fill('#name', 'Ada');
    await page.fill('#telegramBotToken', BOT_TOKEN);
    await page.selectOption('#modelProvider', 'anthropic');
    await page.fill('#modelApiKey', MODEL_KEY);
    await page.click('#signup-submit');
    await page.waitForURL(`${stripe.url}/c/pay/**`);
    const id = new URL(page.url()).pathname.split('/').pop() as string;
    session = stripe.sessions.get(id) as FakeSession;
    expect(session.customer_email).toBe(email);
    customerName = session.client_reference_id as string;
    expect(customerName).toMatch(/^browser-/);
    await shot('03-checkout');
  });

  it('status: after the signed webhook, progress reaches Ready with the Telegram link', async () => {
    await deliver(
      stripeEvent('checkout.session.completed', completedSessionObject(session, stripeIds), {
        created: Math.floor(Date.now() / 1000),
      }),
    );
    // Where Stripe sends the buyer back to: this server's own status page, with the access token.
    expect(session.success_url).toMatch(new RegExp(`^${served.url}/status/${customerName}\\?token=`));
    await page.goto(session.success_url);
    await waitForText('#phase', /\w/);
    await waitForText('li[data-step="payment"] .step-state', /^done$/);
    await shot('04-status-progress');

    await waitForText('#phase', /^Ready$/, 90_000).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}\n${served.log().slice(-3000)}`);
    });
    for (const step of ['payment', 'workspace', 'assistant', 'reachable']) {
      expect(await page.getAttribute(`li[data-step="${step}"]`, 'data-done')).toBe('true');
    }
    expect(await text('#summary')).toMatch(/ready/i);
    const telegramUrl = `https://t.me/${botUsername(BOT_TOKEN)}`;
    expect(await page.getAttribute('#telegram-link', 'href')).toBe(telegramUrl);
    expect(await text('#telegram-link')).toBe(telegramUrl);
    expect(await text('#assistant-url')).toMatch(new RegExp(`^http://${customerName}\\.blytz\\.localhost`));
    expect(await page.isVisible('#pairing-form')).toBe(true);
    // The server spent the link's token on a session (an HttpOnly cookie) and redirected: the token
    // is out of the address bar (browser history, a copied link) and a reload still shows the page.
    expect(page.url()).toBe(`${served.url}/status/${customerName}`);
    const cookies = await page.context().cookies(served.url);
    expect(cookies.find((c) => c.name === 'blytz_session')).toMatchObject({ httpOnly: true, sameSite: 'Strict' });
    expect(await page.evaluate(() => (globalThis as unknown as { document: { cookie: string } }).document.cookie)).not.toContain(
      'blytz_session',
    );
    await page.reload();
    await waitForText('#phase', /^Ready$/);
    expect(await page.isVisible('#pairing-form')).toBe(true);
    await expectFitsPhone();
    await shot('05-status-ready');
  });

  it('pairing: a wrong code is explained next to the field, the pending one is approved in the container', async () => {
    const home = join(served.dataDir, 'customers', customerName);
    await writeFile(join(home, 'pending-pairing-codes'), `${PAIRING_CODE}\n`, { mode: 0o644 });
    await chown(join(home, 'pending-pairing-codes'), 1000, 1000);

    await page.fill('#code', 'WRONG123');
    await page.click('#pairing-submit');
    await waitForText('#code-error', /wrong or has expired/);
    expect(await page.getAttribute('#code', 'aria-invalid')).toBe('true');
    await shot('06-pairing-rejected');

    await page.fill('#code', PAIRING_CODE.toLowerCase()); // typed as it comes, case does not matter
    await page.click('#pairing-submit');
    // While the command runs in the container the page says so, and counts.
    await waitForText('#pairing-result', /^Approving with your assistant… \d+ s/);
    expect(await page.getAttribute('#pairing-form', 'aria-busy')).toBe('true');
    await shot('07-pairing-in-progress');
    await writeFile(join(home, `release-${PAIRING_CODE}`), '');
    await waitForText('#pairing-result', /^Approved!/);
    expect(await text('#code-error')).toBe('');
    expect(await page.getAttribute('#code', 'aria-invalid')).toBeNull();
    await shot('08-pairing-approved');

    const [container] = await instanceContainers(served.instance, customerName);
    const calls = execFileSync('docker', ['exec', container!.Id, 'cat', '/tmp/openclaw-calls.log'], { encoding: 'utf8' });
    expect(calls.split('\n')).toEqual(
      expect.arrayContaining([`pairing approve telegram WRONG123`, `pairing approve telegram ${PAIRING_CODE}`]),
    );
  });

  it('suspended: the customer sees why and what to do', async () => {
    await deliver(
      stripeEvent(
        'customer.subscription.updated',
        subscriptionObject({ ...stripeIds, id: stripeIds.subscription, status: 'unpaid', name: customerName }),
        { created: Math.floor(Date.now() / 1000) + 10 },
      ),
    );
    await waitForText('#problem-title', /Your assistant is paused/);
    expect(await text('#problem-text')).toMatch(/Update your card/);
    expect(await page.isVisible('#pairing')).toBe(false);
    expect(await page.isVisible('#progress')).toBe(true);
    await expectFitsPhone();
    await shot('09-suspended');
  });

  it('cancelled: the customer sees it ended and can sign up again', async () => {
    await deliver(
      stripeEvent(
        'customer.subscription.deleted',
        subscriptionObject({ ...stripeIds, id: stripeIds.subscription, status: 'canceled', name: customerName }),
        { created: Math.floor(Date.now() / 1000) + 20 },
      ),
    );
    await waitForText('#problem-title', /Your subscription has ended/);
    expect(await text('#problem-link')).toBe('Sign up again');
    expect(await page.getAttribute('#problem-link', 'href')).toBe('/');
    expect(await page.isVisible('#progress')).toBe(false);
    await shot('10-cancelled');
  });

  it('no secret was ever in a URL or in the server log', async () => {
    const token = new URL(session.success_url).searchParams.get('token') as string;
    expect(visited.length).toBeGreaterThan(5);
    for (const url of visited) {
      for (const secret of [BOT_TOKEN, MODEL_KEY, PAIRING_CODE, email, encodeURIComponent(email)])
        expect(url).not.toContain(secret);
      // The access token only in the status link itself (spent there for a session), never in an API call.
      if (url.includes(token)) expect(new URL(url).pathname).toBe(`/status/${customerName}`);
    }
    const log = served.log();
    for (const secret of [BOT_TOKEN, MODEL_KEY, PAIRING_CODE, token]) expect(log).not.toContain(secret);
  });
});
