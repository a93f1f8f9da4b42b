import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createLogger, maskSecrets, type Logger } from '../../src/observability/logger.js';

const BOT_TOKEN = '123456789:AAbbccddeeffgghhiijjkkllmmnnooppqqr';
const STRIPE_KEY = 'sk_live_51HqQwErTyUiOpAsDfGhJkLzXcVbNm';
const WEBHOOK_SECRET = 'whsec_9f8e7d6c5b4a39281706f5e4d3c2b1a0';
const BEARER = 'eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.sig-nature_x';
const PLAIN_SECRET = 'correct-horse-battery-staple-4711';
const ADMIN_TOKEN = 'QmFzZTY0QWRtaW5Ub2tlbk5vdEd1ZXNzYWJsZQ';

/** A logger writing into memory (a pino destination), and everything it wrote. */
function capture(): { logger: Logger; output: () => string } {
  const chunks: string[] = [];
  const destination = new Writable({
    write(chunk: Buffer | string, _encoding, callback) {
      chunks.push(chunk.toString());
      callback();
    },
  });
  return { logger: createLogger({ level: 'trace', destination }), output: () => chunks.join('') };
}

function expectAbsent(output: string, ...secrets: string[]): void {
  expect(output.length).toBeGreaterThan(0);
  for (const secret of secrets) expect(output).not.toContain(secret);
  // Each line is still JSON.
  for (const line of output.trim().split('\n')) expect(() => JSON.parse(line) as unknown).not.toThrow();
}

describe('logger redaction', () => {
  it('redacts bot tokens in fields at any usual depth', () => {
    const { logger, output } = capture();
    logger.info({ botToken: BOT_TOKEN }, 'top level');
    logger.info({ telegram: { botToken: BOT_TOKEN } }, 'nested');
    logger.info({ spec: { telegram: { botToken: BOT_TOKEN } } }, 'spec.telegram.botToken');
    logger.info({ customer: { spec: { telegram: { botToken: BOT_TOKEN } } } }, 'deeper');
    logger.info({ body: { telegramBotToken: BOT_TOKEN } }, 'signup body');
    expectAbsent(output(), BOT_TOKEN);
    expect(output()).toContain('[REDACTED]');
    expect(output()).toContain('spec.telegram.botToken');
  });

  it('redacts Stripe keys wherever they appear', () => {
    const { logger, output } = capture();
    logger.info({ STRIPE_SECRET_KEY: STRIPE_KEY, STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET }, 'config');
    logger.info({ config: { STRIPE_SECRET_KEY: STRIPE_KEY } }, 'nested config');
    logger.info({ stripe: { apiKey: STRIPE_KEY } }, 'client');
    logger.warn(`stripe call failed with key ${STRIPE_KEY} and secret ${WEBHOOK_SECRET}`);
    logger.info({ note: `key is ${STRIPE_KEY}` }, 'free text in an unlisted field');
    expectAbsent(output(), STRIPE_KEY, WEBHOOK_SECRET);
  });

  it('redacts authorization headers, however they are spelt', () => {
    const { logger, output } = capture();
    logger.info({ req: { method: 'GET', url: '/apis', headers: { authorization: `Bearer ${BEARER}` } } }, 'request');
    logger.info({ headers: { authorization: `Bearer ${BEARER}` } }, 'headers');
    logger.info({ headers: { Authorization: `Bearer ${BEARER}` } }, 'capitalised header');
    logger.info({ authorization: `Bearer ${BEARER}` }, 'bare');
    logger.info(`calling with Authorization: Bearer ${BEARER}`);
    logger.info({ url: `/api/customers/x/status?token=${ADMIN_TOKEN}` }, 'status');
    logger.info({ BLYTZ_ADMIN_TOKEN: ADMIN_TOKEN, token: ADMIN_TOKEN }, 'tokens');
    expectAbsent(output(), BEARER, ADMIN_TOKEN);
  });

  it('redacts anything in a secret field', () => {
    const { logger, output } = capture();
    logger.info({ secret: PLAIN_SECRET }, 'top');
    logger.info({ webhook: { secret: PLAIN_SECRET } }, 'nested');
    logger.info({ secrets: { anything: PLAIN_SECRET } }, 'secrets object');
    logger.info({ a: { b: { secret: PLAIN_SECRET } } }, 'deep');
    logger.info({ secretKey: PLAIN_SECRET, password: PLAIN_SECRET }, 'others');
    expectAbsent(output(), PLAIN_SECRET);
  });

  it('masks a token inside an error message, logged every usual way', () => {
    const { logger, output } = capture();
    const error = new Error(`Telegram answered 401 for https://api.telegram.org/bot${BOT_TOKEN}/getMe`);
    logger.error(error);
    logger.error({ err: error });
    logger.error({ err: error }, 'getMe failed');
    logger.error(error, 'getMe failed: %s', error.message);
    logger.error(new Error('outer', { cause: new Error(`inner with ${STRIPE_KEY}`) }));
    logger.warn({ err: `plain string error with ${BOT_TOKEN}` }, 'string err');
    logger.info({ message: `token ${BOT_TOKEN} in a message field` });
    logger.info(`token in the message ${BOT_TOKEN}`);
    logger.info({}, `token in the message ${BOT_TOKEN} after an object`);
    expectAbsent(output(), BOT_TOKEN, STRIPE_KEY, BOT_TOKEN.split(':')[1]!);
    expect(output()).toContain('getMe');
  });

  it("redacts gateway and admin tokens, the database URL and a manifest's model key by field", () => {
    const { logger, output } = capture();
    logger.info({ config: { gatewayToken: PLAIN_SECRET }, adminToken: ADMIN_TOKEN }, 'tokens');
    logger.info({ env: { DATABASE_URL: `postgres://blytz:${PLAIN_SECRET}@db/blytz` } }, 'env');
    logger.info({ manifest: { spec: { apiKey: PLAIN_SECRET } } }, 'manifest');
    expectAbsent(output(), PLAIN_SECRET, ADMIN_TOKEN);
  });

  it("redacts the platform's model provider keys and model credentials by field", () => {
    const { logger, output } = capture();
    logger.info({ config: { BLYTZ_OPENAI_API_KEY: PLAIN_SECRET, BLYTZ_ANTHROPIC_API_KEY: ADMIN_TOKEN } }, 'config');
    logger.info({ credential: PLAIN_SECRET, req: { headers: { 'x-api-key': ADMIN_TOKEN } } }, 'gateway');
    expectAbsent(output(), PLAIN_SECRET, ADMIN_TOKEN);
  });

  it('masks secrets in child logger bindings', () => {
    const { logger, output } = capture();
    logger.child({ customer: 'alice', botToken: BOT_TOKEN }).info('child');
    expectAbsent(output(), BOT_TOKEN);
    expect(output()).toContain('alice');
  });

  it('redacts secret fields at any depth, in arrays, and under any spelling of their names', () => {
    const { logger, output } = capture();
    logger.info({ a: { b: { c: { d: { e: { f: { botToken: BOT_TOKEN } } } } } } }, 'six levels down');
    logger.info({ customers: [{ name: 'alice', telegram: { botToken: BOT_TOKEN } }, { name: 'bob' }] }, 'in an array');
    logger.info({ sessionToken: ADMIN_TOKEN, client_secret: PLAIN_SECRET, 'X-Api-Key': PLAIN_SECRET }, 'other spellings');
    logger.info({ res: { headers: { 'Set-Cookie': `blytz_session=${ADMIN_TOKEN}` } } }, 'a session cookie');
    logger.info({ database_url: `postgres://blytz:${PLAIN_SECRET}@db/blytz` }, 'snake case');
    expectAbsent(output(), BOT_TOKEN, ADMIN_TOKEN, PLAIN_SECRET);
    const lines = output().trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(lines[1]).toMatchObject({ customers: [{ name: 'alice', telegram: { botToken: '[REDACTED]' } }, { name: 'bob' }] });
  });

  it("redacts secret fields of an error's own, logged as err or under another field", () => {
    const { logger, output } = capture();
    const error = Object.assign(new Error('the call failed'), { config: { headers: { authorization: `Bearer ${BEARER}` } }, token: ADMIN_TOKEN });
    logger.error({ err: error }, 'as err');
    logger.error(error);
    logger.error({ failure: error }, 'under another field');
    logger.error(new Error('outer', { cause: Object.assign(new Error('inner'), { apiKey: PLAIN_SECRET }) }));
    expectAbsent(output(), BEARER, ADMIN_TOKEN, PLAIN_SECRET);
    expect(output()).toContain('the call failed');
    expect(error.token).toBe(ADMIN_TOKEN);
  });

  it('redacts nested secret fields in the bindings of a child of a child', () => {
    const { logger, output } = capture();
    logger.child({ component: 'outer' }).child({ config: { gatewayToken: PLAIN_SECRET }, customer: 'alice' }).info('grandchild');
    expectAbsent(output(), PLAIN_SECRET);
    expect(JSON.parse(output())).toMatchObject({ component: 'outer', customer: 'alice', config: { gatewayToken: '[REDACTED]' } });
  });

  it('writes an object with a cycle or a shared part once, secrets redacted', () => {
    const { logger, output } = capture();
    const shared = { password: PLAIN_SECRET, user: 'blytz' };
    const looped: Record<string, unknown> = { name: 'loop', shared, again: shared };
    looped['self'] = looped;
    logger.info({ looped }, 'cycle');
    expectAbsent(output(), PLAIN_SECRET);
    expect(JSON.parse(output())).toMatchObject({ looped: { shared: { user: 'blytz' }, again: { user: 'blytz' }, self: '[Circular]' } });
  });

  it('does not change the object the caller logged', () => {
    const { logger } = capture();
    const record = { url: `/status?token=${ADMIN_TOKEN}`, spec: { telegram: { botToken: BOT_TOKEN } } };
    logger.info(record, 'request');
    expect(record.url).toBe(`/status?token=${ADMIN_TOKEN}`);
    expect(record.spec.telegram.botToken).toBe(BOT_TOKEN);
    const listed = { items: [{ token: ADMIN_TOKEN }] };
    logger.child({ listed }).info('child');
    expect(listed.items[0]?.token).toBe(ADMIN_TOKEN);
  });

  it('keeps ordinary text readable', () => {
    const { logger, output } = capture();
    logger.info({ customer: 'alice-example-com', generation: 3 }, 'reconciled in 12 ms');
    const line = JSON.parse(output()) as Record<string, unknown>;
    expect(line).toMatchObject({ customer: 'alice-example-com', generation: 3, msg: 'reconciled in 12 ms', service: 'blytz' });
  });
});

describe('maskSecrets', () => {
  it.each([
    [`bot${BOT_TOKEN}/sendMessage`, BOT_TOKEN],
    [`token=${BOT_TOKEN}`, BOT_TOKEN],
    [`"${STRIPE_KEY}"`, STRIPE_KEY],
    [`rk_test_abcdefghijkl`, 'rk_test_abcdefghijkl'],
    [`Authorization: bearer ${BEARER}`, BEARER],
    [`?access_token=${ADMIN_TOKEN}&x=1`, ADMIN_TOKEN],
    ['model key sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx rejected', 'sk-ant-api03-AbCdEfGhIjKlMnOpQrStUvWx'],
    ['key sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz012345', 'sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz012345'],
    ['google AIzaSyAbCdEfGhIjKlMnOpQrStUvWxYz0123456', 'AIzaSyAbCdEfGhIjKlMnOpQrStUvWxYz0123456'],
    ['connect to postgres://blytz:s3cr3t-pass@db:5432/blytz failed', 's3cr3t-pass'],
    [
      'credential blytz-mk-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-abcdefg used',
      'blytz-mk-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789_-abcdefg',
    ],
  ])('masks %s', (text, secret) => {
    expect(maskSecrets(text)).not.toContain(secret);
  });

  it('keeps the rest of a URL with a password readable', () => {
    expect(maskSecrets('postgres://blytz:pw@db:5432/blytz')).toBe('postgres://blytz:[REDACTED]@db:5432/blytz');
  });
});
