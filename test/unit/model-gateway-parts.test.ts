import type { IncomingMessage } from 'node:http';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { modelGatewayCheck } from '../../src/http/model-access-api.js';
import { CONTROLLER_POD_LABELS } from '../../src/runtime/kubernetes/manifests.js';
import { loadConfig } from '../../src/config.js';
import { customerNetwork } from '../../src/runtime/select-runtime.js';
import { credentialHash, isCredentialShaped, newCredential } from '../../src/store/model-credential.js';
import { credentialOf, nestedDeeperThan, prepareBody } from '../../src/models/gateway.js';
import { allowedModels } from '../../src/models/model-access.js';
import {
  modelNotAllowed,
  quotaExceeded,
  routeOf,
  tooManyInFlight,
  unauthorized,
  wrongSource,
  type GatewayRoute,
} from '../../src/model-providers/provider-apis.js';
import { AddressBook, normalizeAddress, type CustomerAddresses } from '../../src/runtime/customer-addresses.js';
import { passesBack } from '../../src/model-providers/upstream.js';
import { TimeoutError } from '../../src/resilience/guard.js';
import { isRetryableModelProvider, isTransientModelProvider } from '../../src/resilience/transient.js';

const chat = routeOf('POST', '/openai/v1/chat/completions') as GatewayRoute;
const responses = routeOf('POST', '/openai/v1/responses') as GatewayRoute;
const messages = routeOf('POST', '/anthropic/v1/messages') as GatewayRoute;

describe('routes', () => {
  it('serves only the metered endpoints, by POST', () => {
    expect(chat).toMatchObject({ api: 'openai-chat', provider: 'openai', upstreamPath: '/v1/chat/completions' });
    expect(responses).toMatchObject({ api: 'openai-responses', upstreamPath: '/v1/responses' });
    expect(messages).toMatchObject({ api: 'anthropic-messages', provider: 'anthropic', upstreamPath: '/v1/messages' });
    for (const [method, path] of [
      ['GET', '/openai/v1/chat/completions'],
      ['POST', '/openai/v1/files'],
      ['POST', '/openai/v1/responses/resp_1/cancel'],
      ['POST', '/anthropic/v1/messages/batches'],
      ['POST', '/v1/chat/completions'],
    ] as const) {
      expect(routeOf(method, path), `${method} ${path}`).toBeUndefined();
    }
  });
});

describe('prepareBody', () => {
  const allowed = ['gpt-5-mini', 'claude-haiku-4-5'];

  it('asks OpenAI chat streams for usage, keeping the other stream options', () => {
    const raw = Buffer.from(
      JSON.stringify({ model: 'gpt-5-mini', stream: true, stream_options: { include_obfuscation: false }, messages: [] }),
    );
    const prepared = prepareBody(chat, raw, allowed);
    expect('body' in prepared && JSON.parse(prepared.body.toString())).toMatchObject({
      stream_options: { include_obfuscation: false, include_usage: true },
    });
    expect(prepared).toMatchObject({ model: 'gpt-5-mini', streamed: true });
  });

  it('passes other bodies on byte for byte', () => {
    const raw = Buffer.from('{"model":"claude-haiku-4-5", "stream":true,"max_tokens":5}');
    expect(prepareBody(messages, raw, allowed)).toEqual({ body: raw, model: 'claude-haiku-4-5', streamed: true });
    const already = Buffer.from('{"model":"gpt-5-mini","stream":true,"stream_options":{"include_usage":true}}');
    expect(prepareBody(chat, already, allowed)).toEqual({ body: already, model: 'gpt-5-mini', streamed: true });
  });

  it('refuses other models, background responses and bodies that are not JSON objects', () => {
    expect(prepareBody(chat, Buffer.from('{"model":"gpt-5-pro"}'), allowed)).toEqual({
      answer: modelNotAllowed('openai', 'gpt-5-pro'),
    });
    expect(prepareBody(responses, Buffer.from('{"model":"gpt-5-mini","background":true}'), allowed)).toMatchObject({
      answer: { status: 400 },
    });
    for (const raw of ['[1]', 'null', '{', '{"messages":[]}']) {
      expect(prepareBody(messages, Buffer.from(raw), allowed), raw).toMatchObject({ answer: { status: 400 } });
    }
  });

  it('refuses a body nested deeper than any request before parsing it (V8 parses deep nesting slowly)', () => {
    const deep = Buffer.from(`{"model":"gpt-5-mini","messages":${'['.repeat(300)}${']'.repeat(300)}}`);
    expect(prepareBody(chat, deep, allowed)).toMatchObject({
      answer: { status: 400, body: { error: { message: 'The request body is nested too deeply.' } } },
    });
    // Brackets inside strings, escaped quotes included, are text.
    const text = Buffer.from(JSON.stringify({ model: 'gpt-5-mini', messages: [{ role: 'user', content: `\\"${'['.repeat(300)}` }] }));
    expect(prepareBody(chat, text, allowed)).toMatchObject({ model: 'gpt-5-mini' });
  });
});

describe('nestedDeeperThan', () => {
  const depthOf = (value: unknown): number =>
    typeof value === 'object' && value !== null ? 1 + Math.max(0, ...Object.values(value).map(depthOf)) : 0;

  it("says whether a JSON text's arrays and objects nest deeper than the limit, whatever its strings hold", () => {
    const strings = fc.string({ unit: fc.constantFrom('[', ']', '{', '}', '"', '\\', 'a', 'é') });
    const json = fc.letrec((tie) => ({
      value: fc.oneof({ depthSize: 'small' }, strings, fc.integer(), tie('array'), tie('object')),
      array: fc.array(tie('value'), { maxLength: 3 }),
      object: fc.dictionary(strings, tie('value'), { maxKeys: 3 }),
    })).value;
    fc.assert(
      fc.property(json, fc.integer({ min: 0, max: 6 }), (value, limit) => {
        expect(nestedDeeperThan(Buffer.from(JSON.stringify(value)), limit)).toBe(depthOf(value) > limit);
      }),
    );
  });
});

describe("answers in each provider's own format", () => {
  const renews = new Date('2027-01-01T00:00:00Z');

  it('quota exhausted: OpenAI 429 insufficient_quota, Anthropic 400 usage limits with the date', () => {
    expect(quotaExceeded('openai', renews)).toMatchObject({
      status: 429,
      body: { error: { type: 'insufficient_quota', code: 'insufficient_quota', param: null } },
    });
    expect(quotaExceeded('anthropic', renews)).toEqual({
      status: 400,
      body: {
        type: 'error',
        error: {
          type: 'invalid_request_error',
          message:
            "You have reached your specified API usage limits: this assistant's monthly usage limit is used up. You will regain access on 2027-01-01 at 00:00 UTC.",
        },
      },
    });
  });

  it('unknown or revoked key, wrong source, too many in flight', () => {
    expect(unauthorized('openai')).toMatchObject({ status: 401, body: { error: { code: 'invalid_api_key' } } });
    expect(unauthorized('anthropic')).toMatchObject({
      status: 401,
      body: { type: 'error', error: { type: 'authentication_error' } },
    });
    expect(wrongSource('anthropic')).toMatchObject({ status: 403, body: { error: { type: 'permission_error' } } });
    expect(tooManyInFlight('openai', 8)).toMatchObject({
      status: 429,
      headers: { 'retry-after': '1' },
      body: { error: { code: 'rate_limit_exceeded' } },
    });
  });
});

describe('credentials', () => {
  it('are random, recognisable and looked up by SHA-256', () => {
    const a = newCredential();
    expect(a).toMatch(/^blytz-mk-[A-Za-z0-9_-]{43}$/);
    expect(isCredentialShaped(a)).toBe(true);
    expect(newCredential()).not.toBe(a);
    expect(credentialHash(a)).toMatch(/^[0-9a-f]{64}$/);
    expect(isCredentialShaped('sk-ant-something')).toBe(false);
  });

  it('come from Authorization: Bearer or x-api-key', () => {
    const req = (headers: Record<string, string>) => ({ headers }) as unknown as IncomingMessage;
    expect(credentialOf(req({ authorization: 'Bearer blytz-mk-abc' }))).toBe('blytz-mk-abc');
    expect(credentialOf(req({ 'x-api-key': 'blytz-mk-def' }))).toBe('blytz-mk-def');
    expect(credentialOf(req({ authorization: 'Basic xyz' }))).toBeUndefined();
    expect(credentialOf(req({}))).toBeUndefined();
  });
});

describe('response headers passed back', () => {
  it("keep retry hints and request ids, drop framing, cookies and the platform account's state", () => {
    for (const name of ['retry-after', 'x-should-retry', 'x-request-id', 'request-id', 'content-type', 'openai-processing-ms'])
      expect(passesBack(name), name).toBe(true);
    for (const name of [
      'Content-Length',
      'transfer-encoding',
      'set-cookie',
      'openai-organization',
      'x-ratelimit-remaining-tokens',
      'anthropic-ratelimit-tokens-remaining',
    ]) {
      expect(passesBack(name), name).toBe(false);
    }
  });
});

describe('model provider failures', () => {
  const connectError = Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED', syscall: 'connect' });
  const resetError = Object.assign(new Error('read ECONNRESET'), { code: 'ECONNRESET', syscall: 'read' });

  it('count against the breaker: 5xx, timeouts, network errors; a 429 or 400 is an answer', () => {
    expect(isTransientModelProvider({ statusCode: 500 })).toBe(true);
    expect(isTransientModelProvider({ statusCode: 529 })).toBe(true);
    expect(isTransientModelProvider({ statusCode: 429 })).toBe(false);
    expect(isTransientModelProvider({ statusCode: 400 })).toBe(false);
    expect(isTransientModelProvider(new TimeoutError('x', 1))).toBe(true);
    expect(isTransientModelProvider(resetError)).toBe(true);
  });

  it('are retried by the gateway only when the request never left', () => {
    expect(isRetryableModelProvider(connectError)).toBe(true);
    expect(isRetryableModelProvider(Object.assign(new Error('getaddrinfo EAI_AGAIN'), { code: 'EAI_AGAIN' }))).toBe(true);
    expect(isRetryableModelProvider(resetError)).toBe(false);
    expect(isRetryableModelProvider({ statusCode: 503 })).toBe(false);
    expect(isRetryableModelProvider(new TimeoutError('x', 1))).toBe(false);
  });
});

describe('allowedModels', () => {
  it('the default model and the extra ones, by provider', () => {
    expect(
      allowedModels({
        BLYTZ_MODEL_DEFAULT: 'anthropic/claude-haiku-4-5',
        BLYTZ_MODEL_ALLOWED: 'openai/gpt-5-mini, anthropic/claude-haiku-4-5',
      }),
    ).toEqual({
      openai: ['gpt-5-mini'],
      anthropic: ['claude-haiku-4-5'],
    });
  });
});

describe('AddressBook', () => {
  function book(listing: () => CustomerAddresses[]) {
    let now = 0;
    let lists = 0;
    const addresses = new AddressBook(
      async () => {
        lists++;
        return listing();
      },
      { maxAgeMs: 5000, minRefreshMs: 1000, now: () => now },
    );
    return { addresses, advance: (ms: number) => (now += ms), lists: () => lists };
  }

  it("takes a credential only from its customer's own container", async () => {
    const { addresses } = book(() => [
      { customer: 'alice', addresses: ['172.30.0.2'] },
      { customer: 'bob', addresses: ['172.30.0.3', 'fd00::3'] },
    ]);
    expect(await addresses.allows('alice', '172.30.0.2')).toBe(true);
    expect(await addresses.allows('alice', '::ffff:172.30.0.2')).toBe(true);
    expect(await addresses.allows('alice', '172.30.0.3')).toBe(false);
    expect(await addresses.allows('bob', 'fd00::3')).toBe(true);
    expect(await addresses.allows('alice', '10.0.0.9')).toBe(false);
    expect(await addresses.allows('alice', undefined)).toBe(false);
  });

  it('lists again for a stranger no more than once per refresh floor, and before trusting an old listing', async () => {
    let listing: CustomerAddresses[] = [];
    const { addresses, advance, lists } = book(() => listing);
    expect(await addresses.allows('alice', '172.30.0.2')).toBe(false);
    expect(lists()).toBe(1);
    // A container started just now is found after the refresh floor.
    listing = [{ customer: 'alice', addresses: ['172.30.0.2'] }];
    expect(await addresses.allows('alice', '172.30.0.2')).toBe(false);
    expect(lists()).toBe(1);
    advance(1001);
    expect(await addresses.allows('alice', '172.30.0.2')).toBe(true);
    expect(lists()).toBe(2);
    // The address went to another customer's container: once the listing is too old to trust, asked again.
    listing = [{ customer: 'bob', addresses: ['172.30.0.2'] }];
    advance(5001);
    expect(await addresses.allows('alice', '172.30.0.2')).toBe(false);
    expect(await addresses.allows('bob', '172.30.0.2')).toBe(true);
  });

  it('an address two customers claim belongs to neither', async () => {
    const { addresses } = book(() => [
      { customer: 'alice', addresses: ['172.30.0.2'] },
      { customer: 'bob', addresses: ['172.30.0.2'] },
    ]);
    expect(await addresses.allows('alice', '172.30.0.2')).toBe(false);
    expect(await addresses.allows('bob', '172.30.0.2')).toBe(false);
  });

  it('one listing in flight however many requests ask at once', async () => {
    const { addresses, lists } = book(() => [{ customer: 'alice', addresses: ['172.30.0.2'] }]);
    await Promise.all(Array.from({ length: 20 }, () => addresses.allows('alice', '172.30.0.2')));
    expect(lists()).toBe(1);
  });

  it('normalizeAddress', () => {
    expect(normalizeAddress('::ffff:10.1.2.3')).toBe('10.1.2.3');
    expect(normalizeAddress('fd00::1')).toBe('fd00::1');
  });
});

describe('blytz doctor: models', () => {
  const config = {
    BLYTZ_MODEL_DEFAULT: 'anthropic/claude-haiku-4-5',
    BLYTZ_MODEL_SOURCE_CHECK: 'runtime' as const,
    BLYTZ_ANTHROPIC_API_KEY: 'sk-ant-secret-value',
    BLYTZ_OPENAI_API_KEY: undefined,
  };

  it('says whether the gateway is on, where, with which keys (never their values)', () => {
    expect(modelGatewayCheck({ ...config, BLYTZ_MODEL_GATEWAY_LISTEN: undefined })).toMatchObject({
      status: 'warn',
      message: expect.stringContaining('included model access not offered: the model gateway is off'),
    });
    // Listening, but without the default model's platform key: not offered either.
    expect(
      modelGatewayCheck({ ...config, BLYTZ_MODEL_GATEWAY_LISTEN: '172.17.0.1:8090', BLYTZ_ANTHROPIC_API_KEY: undefined }),
    ).toMatchObject({ status: 'warn', message: expect.stringContaining('no platform key for BLYTZ_MODEL_DEFAULT') });
    const on = modelGatewayCheck({ ...config, BLYTZ_MODEL_GATEWAY_LISTEN: '172.30.0.1:8090' });
    expect(on).toEqual({
      name: 'models',
      status: 'ok',
      message: 'model gateway on 172.30.0.1:8090, default anthropic/claude-haiku-4-5, platform keys: Anthropic',
    });
    expect(JSON.stringify(on)).not.toContain('sk-ant-secret-value');
    expect(
      modelGatewayCheck({ ...config, BLYTZ_MODEL_GATEWAY_LISTEN: '127.0.0.1:8090', BLYTZ_MODEL_SOURCE_CHECK: 'off' }).status,
    ).toBe('warn');
  });
});

describe('customer pods on Kubernetes', () => {
  it('may reach the model gateway (the controller pods on its port) when it runs, and nothing more', () => {
    const kube = (env: Record<string, string>) =>
      loadConfig({ BLYTZ_RUNTIME: 'kubernetes', BLYTZ_MODEL_GATEWAY_URL: 'http://blytz-model-gateway:8090', ...env });
    expect(customerNetwork(kube({})).modelGateway).toBeUndefined();
    // The port it listens on, unless BLYTZ_MODEL_GATEWAY_PORT says another (a Service in front).
    expect(customerNetwork(kube({ BLYTZ_MODEL_GATEWAY_LISTEN: '0.0.0.0:8090', BLYTZ_ANTHROPIC_API_KEY: 'k' })).modelGateway).toEqual({
      podSelector: CONTROLLER_POD_LABELS,
      port: 8090,
    });
    expect(
      customerNetwork(kube({ BLYTZ_MODEL_GATEWAY_LISTEN: '0.0.0.0:8090', BLYTZ_ANTHROPIC_API_KEY: 'k', BLYTZ_MODEL_GATEWAY_PORT: '9000' }))
        .modelGateway?.port,
    ).toBe(9000);
  });
});
