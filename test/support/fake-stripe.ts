import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import Stripe from 'stripe';

/**
 * A local stand-in for Stripe's API (STRIPE_API_BASE) that the real `stripe` package talks to:
 * form-encoded requests with bracketed keys, Bearer secret key, Idempotency-Key replay, JSON
 * objects and `{error: {type, message}}` failures. Plus builders for the events Stripe would
 * send afterwards, signed with `Stripe.webhooks.generateTestHeaderString`.
 */

export const FAKE_SECRET_KEY = 'sk_test_fake_blytz_0123456789';
export const FAKE_PRICE_ID = 'price_test_personal';
/** What the fake's Price FAKE_PRICE_ID says (GET /v1/prices/:id): the landing page must show it. */
export const FAKE_PRICE = { unitAmount: 1900, currency: 'eur', interval: 'month', productName: 'Blytz Personal (test)' } as const;

export interface FakeRequest {
  method: string;
  path: string;
  idempotencyKey: string | undefined;
  params: Record<string, unknown>;
}

export interface FakeSession {
  id: string;
  object: 'checkout.session';
  url: string;
  mode: string;
  status: 'open' | 'complete' | 'expired';
  payment_status: 'paid' | 'unpaid';
  client_reference_id: string | null;
  customer: string | null;
  subscription: string | null;
  customer_email: string | null;
  metadata: Record<string, string>;
  subscription_data_metadata: Record<string, string>;
  success_url: string;
  cancel_url: string | null;
  expires_at: number;
  created: number;
}

/** A billing meter event as the fake stored it (first one per identifier; repeats are dropped, as Stripe does). */
export interface FakeMeterEvent {
  event_name: string;
  identifier: string;
  payload: Record<string, string>;
  timestamp: number;
}

export interface FakeStripe {
  url: string;
  requests: FakeRequest[];
  sessions: Map<string, FakeSession>;
  /** POST /v1/billing/meter_events, by identifier. */
  meterEvents: Map<string, FakeMeterEvent>;
  /** `ok`; `error`: 500 api_error on every call; `down`: connections are cut. */
  mode: 'ok' | 'error' | 'down';
  close(): Promise<void>;
}

export async function startFakeStripe(): Promise<FakeStripe> {
  const replies = new Map<string, { status: number; body: string }>();
  const state: Omit<FakeStripe, 'url' | 'close'> = { requests: [], sessions: new Map(), meterEvents: new Map(), mode: 'ok' };
  let base = '';
  const server: Server = createServer(async (req, res) => {
    if (state.mode === 'down') {
      req.socket.destroy();
      return;
    }
    const send = (status: number, body: unknown) => {
      const text = JSON.stringify(body);
      res
        .writeHead(status, { 'content-type': 'application/json', 'request-id': `req_${randomBytes(6).toString('hex')}` })
        .end(text);
      return text;
    };
    const raw = await readBody(req);
    const url = new URL(req.url ?? '/', 'http://x');
    const idempotencyKey = header(req, 'idempotency-key');
    const params = parseForm(req.method === 'GET' ? url.search.slice(1) : raw);
    state.requests.push({ method: req.method ?? 'GET', path: url.pathname, idempotencyKey, params });
    if (state.mode === 'error') {
      send(500, { error: { type: 'api_error', message: 'An unknown error occurred (fake outage)' } });
      return;
    }
    // The hosted checkout page a buyer's browser lands on (no API key: it is a page, not the API).
    const pay = /^\/c\/pay\/([^/]+)$/.exec(url.pathname);
    if (req.method === 'GET' && pay) {
      const session = state.sessions.get(pay[1] as string);
      if (!session) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('no such checkout session');
        return;
      }
      const escape = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(
        `<!doctype html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">` +
          `<title>Checkout (test)</title></head><body style="font-family: system-ui, sans-serif; padding: 1rem">` +
          `<h1>Test checkout</h1><p>Subscription for ${escape(session.customer_email ?? session.client_reference_id ?? '')}</p>` +
          `<p><a id="pay" href="${escape(session.success_url)}">Pay (test mode)</a></p></body></html>`,
      );
      return;
    }
    if (header(req, 'authorization') !== `Bearer ${FAKE_SECRET_KEY}`) {
      send(401, { error: { type: 'invalid_request_error', message: 'Invalid API Key provided' } });
      return;
    }
    const replayKey = idempotencyKey ? `${req.method} ${url.pathname} ${idempotencyKey}` : undefined;
    const replay = replayKey ? replies.get(replayKey) : undefined;
    if (replay) {
      res.writeHead(replay.status, { 'content-type': 'application/json', 'idempotent-replayed': 'true' }).end(replay.body);
      return;
    }
    if (req.method === 'POST' && url.pathname === '/v1/checkout/sessions') {
      const lineItems = params['line_items'] as Record<string, Record<string, string>> | undefined;
      if (params['mode'] !== 'subscription' || lineItems?.['0']?.['price'] !== FAKE_PRICE_ID) {
        send(400, { error: { type: 'invalid_request_error', message: 'No such price or mode', param: 'line_items[0][price]' } });
        return;
      }
      const id = `cs_test_${randomBytes(12).toString('hex')}`;
      const now = Math.floor(Date.now() / 1000);
      const subscriptionData = params['subscription_data'] as { metadata?: Record<string, string> } | undefined;
      const session: FakeSession = {
        id,
        object: 'checkout.session',
        url: `${base}/c/pay/${id}`,
        mode: 'subscription',
        status: 'open',
        payment_status: 'unpaid',
        client_reference_id: (params['client_reference_id'] as string | undefined) ?? null,
        customer: null,
        subscription: null,
        customer_email: (params['customer_email'] as string | undefined) ?? null,
        metadata: (params['metadata'] as Record<string, string> | undefined) ?? {},
        subscription_data_metadata: subscriptionData?.metadata ?? {},
        success_url: params['success_url'] as string,
        cancel_url: (params['cancel_url'] as string | undefined) ?? null,
        // Stripe's default is 24 h; a request may ask for 30 min to 24 h.
        expires_at: params['expires_at'] === undefined ? now + 24 * 3600 : Number(params['expires_at']),
        created: now,
      };
      state.sessions.set(id, session);
      const text = send(200, sessionJson(session));
      if (replayKey) replies.set(replayKey, { status: 200, body: text });
      return;
    }
    const price = /^\/v1\/prices\/([^/]+)$/.exec(url.pathname);
    if (req.method === 'GET' && price) {
      if (price[1] !== FAKE_PRICE_ID) {
        send(404, { error: { type: 'invalid_request_error', message: `No such price: '${price[1]}'`, param: 'id' } });
        return;
      }
      // The stripe package sends `expand: ['product']` as expand[0]=product.
      const expand = [...url.searchParams].filter(([key]) => key.startsWith('expand[')).map(([, value]) => value);
      send(200, priceJson(expand.includes('product')));
      return;
    }
    if (req.method === 'POST' && url.pathname === '/v1/billing/meter_events') {
      const payload = params['payload'] as Record<string, string> | undefined;
      const eventName = params['event_name'] as string | undefined;
      if (!eventName || !payload?.['stripe_customer_id'] || payload['value'] === undefined || !/^\d+$/.test(payload['value'])) {
        send(400, {
          error: {
            type: 'invalid_request_error',
            message: 'event_name, payload[stripe_customer_id] and a whole payload[value] are required',
          },
        });
        return;
      }
      if (!payload['stripe_customer_id'].startsWith('cus_')) {
        send(400, { error: { type: 'invalid_request_error', message: `No such customer: '${payload['stripe_customer_id']}'` } });
        return;
      }
      const identifier = (params['identifier'] as string | undefined) ?? `mev_${randomBytes(8).toString('hex')}`;
      const timestamp = Number(params['timestamp'] ?? Math.floor(Date.now() / 1000));
      const event: FakeMeterEvent = { event_name: eventName, identifier, payload, timestamp };
      // Stripe enforces identifier uniqueness (24 h at least): a repeat is not counted again.
      if (!state.meterEvents.has(identifier)) state.meterEvents.set(identifier, event);
      send(200, { object: 'billing.meter_event', created: Math.floor(Date.now() / 1000), livemode: false, ...event });
      return;
    }
    const expire = /^\/v1\/checkout\/sessions\/([^/]+)\/expire$/.exec(url.pathname);
    if (req.method === 'POST' && expire) {
      const session = state.sessions.get(expire[1] as string);
      if (!session) send(404, { error: { type: 'invalid_request_error', message: 'No such checkout.session' } });
      else if (session.status !== 'open') {
        send(400, {
          error: { type: 'invalid_request_error', message: `Only Checkout Sessions with a status in ["open"] can be expired (${session.status})` },
        });
      } else {
        session.status = 'expired';
        send(200, sessionJson(session));
      }
      return;
    }
    const get = /^\/v1\/checkout\/sessions\/([^/]+)$/.exec(url.pathname);
    if (req.method === 'GET' && get) {
      const session = state.sessions.get(get[1] as string);
      if (session) send(200, sessionJson(session));
      else send(404, { error: { type: 'invalid_request_error', message: 'No such checkout.session' } });
      return;
    }
    send(404, { error: { type: 'invalid_request_error', message: `Unrecognized request URL (${req.method}: ${url.pathname})` } });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  base = `http://127.0.0.1:${port}`;
  return Object.assign(state, {
    url: base,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  });
}

/** The Price object as Stripe returns it; `product` expanded on request (`expand[]=product`). */
function priceJson(expandProduct: boolean): Record<string, unknown> {
  const product = {
    id: 'prod_test_personal',
    object: 'product',
    name: FAKE_PRICE.productName,
    active: true,
    livemode: false,
  };
  return {
    id: FAKE_PRICE_ID,
    object: 'price',
    active: true,
    billing_scheme: 'per_unit',
    currency: FAKE_PRICE.currency,
    livemode: false,
    product: expandProduct ? product : product.id,
    recurring: { interval: FAKE_PRICE.interval, interval_count: 1, usage_type: 'licensed' },
    type: 'recurring',
    unit_amount: FAKE_PRICE.unitAmount,
    unit_amount_decimal: String(FAKE_PRICE.unitAmount),
  };
}

function sessionJson(session: FakeSession): Record<string, unknown> {
  const { subscription_data_metadata: _hidden, ...rest } = session;
  return { ...rest, livemode: false };
}

function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

/** `a[b][0][c]=v` (Stripe's form encoding) into nested objects; array indexes stay string keys. */
export function parseForm(body: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of new URLSearchParams(body)) {
    const path = key.split(/\[|\]\[|\]/).filter((p) => p !== '');
    let node = out;
    path.forEach((part, i) => {
      if (i === path.length - 1) node[part] = value;
      else node = (node[part] ??= {}) as Record<string, unknown>;
    });
  }
  return out;
}

// ---- events ----------------------------------------------------------------------------

export interface EventOptions {
  id?: string;
  created?: number;
}

export function stripeEvent(type: string, object: Record<string, unknown>, options: EventOptions = {}): Record<string, unknown> {
  return {
    id: options.id ?? `evt_${randomBytes(12).toString('hex')}`,
    object: 'event',
    api_version: '2026-10-28.endive',
    created: options.created ?? Math.floor(Date.now() / 1000),
    type,
    data: { object },
    livemode: false,
    pending_webhooks: 1,
    request: { id: null, idempotency_key: null },
  };
}

/** The session as Stripe sends it in checkout.session.completed once the buyer paid. */
export function completedSessionObject(
  session: FakeSession,
  ids: { customer?: string; subscription?: string; paymentStatus?: 'paid' | 'unpaid' } = {},
): Record<string, unknown> {
  return {
    ...sessionJson(session),
    status: 'complete',
    payment_status: ids.paymentStatus ?? 'paid',
    customer: ids.customer ?? `cus_${randomBytes(8).toString('hex')}`,
    subscription: ids.subscription ?? `sub_${randomBytes(8).toString('hex')}`,
  };
}

export function subscriptionObject(fields: {
  id: string;
  customer: string;
  status: string;
  name?: string;
  /** The customer uid the checkout put in subscription_data.metadata (Stripe copies it here). */
  uid?: string;
}): Record<string, unknown> {
  return {
    id: fields.id,
    object: 'subscription',
    customer: fields.customer,
    status: fields.status,
    metadata: { ...(fields.name ? { blytz_customer: fields.name } : {}), ...(fields.uid ? { blytz_uid: fields.uid } : {}) },
    items: { object: 'list', data: [] },
    livemode: false,
  };
}

/** An invoice in the 2025+ shape: the subscription under parent.subscription_details. */
export function invoiceObject(fields: {
  subscription: string;
  customer: string;
  name?: string;
  attemptCount?: number;
}): Record<string, unknown> {
  return {
    id: `in_${randomBytes(8).toString('hex')}`,
    object: 'invoice',
    customer: fields.customer,
    attempt_count: fields.attemptCount ?? 1,
    parent: {
      type: 'subscription_details',
      subscription_details: { subscription: fields.subscription, metadata: fields.name ? { blytz_customer: fields.name } : {} },
    },
  };
}

/** The Stripe-Signature header for `payload`, made by the real stripe package. */
export function signatureHeader(payload: string, secret: string, timestamp?: number): string {
  return Stripe.webhooks.generateTestHeaderString({ payload, secret, ...(timestamp !== undefined ? { timestamp } : {}) });
}
