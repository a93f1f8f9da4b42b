import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.js';
import { checkCapacity } from '../../src/domain/capacity.js';

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    return error as ConfigError;
  }
  throw new Error('loadConfig accepted a bad configuration');
}

describe('loadConfig', () => {
  it('gives every contract section 2 variable its default on an empty environment', () => {
    const config = loadConfig({});
    expect(config.DATABASE_URL).toBeUndefined();
    expect(config.BLYTZ_DATA_DIR).toBe('./data');
    expect(config.PORT).toBe(8080);
    expect(config.HOST).toBe('127.0.0.1');
    expect(config.DOCKER_HOST).toBe('unix:///var/run/docker.sock');
    expect(config.CADDY_ADMIN_URL).toBe('http://127.0.0.1:2019');
    expect(config.BLYTZ_CADDY_SERVER).toBe('blytz');
    expect(config.BLYTZ_CADDY_LISTEN).toBe(':80');
    expect(config.BLYTZ_BASE_DOMAIN).toBe('blytz.localhost');
    expect(config.BLYTZ_PUBLIC_SCHEME).toBe('https');
    expect(config.BLYTZ_CUSTOMER_IMAGE).toMatch(/openclaw/);
    expect(config.BLYTZ_CONTAINER_PORT).toBe(18789);
    expect(config.BLYTZ_PORT_RANGE).toEqual({ from: 30000, to: 32767 });
    expect(config.BLYTZ_ADMIN_TOKEN).toBeUndefined();
    expect(config.BLYTZ_SECRET_KEY).toBeUndefined();
    expect(config.BLYTZ_WORKERS).toBe(4);
    expect(config.BLYTZ_RESYNC_SECONDS).toBe(300);
    expect(config.BLYTZ_ROUTE_SWEEP_SECONDS).toBe(10);
    expect(config.STRIPE_SECRET_KEY).toBeUndefined();
    expect(config.STRIPE_WEBHOOK_SECRET).toBeUndefined();
    expect(config.STRIPE_PRICE_ID).toBeUndefined();
    expect(config.STRIPE_API_BASE).toBeUndefined();
    // "Telegram's own" base URL.
    expect(config.TELEGRAM_API_BASE).toBe('https://api.telegram.org');
    // As many personal assistants as this host's memory holds at their limit.
    expect(config.BLYTZ_MAX_CUSTOMERS).toBe(Math.max(1, checkCapacity(0, totalmem()).fit.personal));
    expect(config.BLYTZ_TRUST_PROXY).toBeUndefined();
    expect(config.BLYTZ_RETENTION_DAYS).toBe(30);
    expect(config.BLYTZ_RUNTIME).toBe('docker');
    expect(config.BLYTZ_SOURCE).toBe('postgres');
    expect(config.BLYTZ_ROUTES).toBe('caddy');
    expect(config.BLYTZ_INGRESS_CLASS).toBeUndefined();
    expect(config.LOG_LEVEL).toBe('info');
  });

  it('treats empty strings as unset', () => {
    const config = loadConfig({ PORT: '', DATABASE_URL: '', LOG_LEVEL: '' });
    expect(config.PORT).toBe(8080);
    expect(config.DATABASE_URL).toBeUndefined();
    expect(config.LOG_LEVEL).toBe('info');
  });

  it('parses good values', () => {
    const key = Buffer.alloc(32, 7).toString('base64');
    const config = loadConfig({
      DATABASE_URL: 'postgres://u:p@db:5432/blytz',
      BLYTZ_DATA_DIR: '/var/lib/blytz',
      PORT: '9090',
      HOST: '127.0.0.1',
      DOCKER_HOST: 'tcp://docker:2375',
      CADDY_ADMIN_URL: 'http://caddy:2019',
      BLYTZ_CADDY_SERVER: 'srv0',
      BLYTZ_CADDY_LISTEN: ':8443',
      BLYTZ_BASE_DOMAIN: 'blytz.cloud',
      BLYTZ_PUBLIC_SCHEME: 'http',
      BLYTZ_CUSTOMER_IMAGE: 'blytz/assistant-stub:dev',
      BLYTZ_CONTAINER_PORT: '8000',
      BLYTZ_PORT_RANGE: '40000-40010',
      BLYTZ_ADMIN_TOKEN: 'a-long-enough-admin-token',
      BLYTZ_SECRET_KEY: key,
      BLYTZ_WORKERS: '8',
      BLYTZ_RESYNC_SECONDS: '60',
      BLYTZ_ROUTE_SWEEP_SECONDS: '5',
      STRIPE_SECRET_KEY: 'sk_test_x',
      STRIPE_WEBHOOK_SECRET: 'whsec_x',
      STRIPE_PRICE_ID: 'price_1',
      STRIPE_API_BASE: 'http://127.0.0.1:12111',
      TELEGRAM_API_BASE: 'http://127.0.0.1:12112',
      BLYTZ_MAX_CUSTOMERS: '5',
      BLYTZ_TRUST_PROXY: 'loopback',
      BLYTZ_RETENTION_DAYS: '7',
      BLYTZ_RUNTIME: 'kubernetes',
      BLYTZ_SOURCE: 'kubernetes',
      BLYTZ_NAMESPACE: 'blytz-prod',
      LOG_LEVEL: 'debug',
    });
    expect(config).toMatchObject({
      DATABASE_URL: 'postgres://u:p@db:5432/blytz',
      PORT: 9090,
      BLYTZ_CONTAINER_PORT: 8000,
      BLYTZ_PORT_RANGE: { from: 40000, to: 40010 },
      BLYTZ_SECRET_KEY: key,
      BLYTZ_WORKERS: 8,
      BLYTZ_MAX_CUSTOMERS: 5,
      BLYTZ_RETENTION_DAYS: 7,
      BLYTZ_RUNTIME: 'kubernetes',
      BLYTZ_SOURCE: 'kubernetes',
      BLYTZ_NAMESPACE: 'blytz-prod',
      LOG_LEVEL: 'debug',
      STRIPE_API_BASE: 'http://127.0.0.1:12111',
    });
  });

  it('reports every bad variable by name in one ConfigError', () => {
    const bad: Record<string, string> = {
      DATABASE_URL: 'mysql://nope',
      PORT: 'eighty',
      DOCKER_HOST: '/var/run/docker.sock',
      CADDY_ADMIN_URL: 'not a url',
      BLYTZ_CADDY_SERVER: 'has spaces',
      BLYTZ_CADDY_LISTEN: 'eighty',
      BLYTZ_BASE_DOMAIN: 'Not_A_Domain',
      BLYTZ_PUBLIC_SCHEME: 'ftp',
      BLYTZ_CONTAINER_PORT: '70000',
      BLYTZ_PORT_RANGE: '32767-30000',
      BLYTZ_ADMIN_TOKEN: 'short',
      BLYTZ_SECRET_KEY: Buffer.alloc(16).toString('base64'),
      BLYTZ_WORKERS: '0',
      BLYTZ_RESYNC_SECONDS: '-1',
      BLYTZ_ROUTE_SWEEP_SECONDS: '1.5',
      STRIPE_API_BASE: 'stripe',
      TELEGRAM_API_BASE: 'telegram',
      BLYTZ_MAX_CUSTOMERS: 'many',
      BLYTZ_RETENTION_DAYS: 'forever',
      BLYTZ_RUNTIME: 'podman',
      BLYTZ_SOURCE: 'mysql',
      BLYTZ_NAMESPACE: 'Not_A_Namespace',
      LOG_LEVEL: 'loud',
    };
    const error = configError({ ...bad, HOST: '127.0.0.1' });
    const named = new Set(error.problems.map((p) => p.split(':')[0]));
    expect([...named].sort()).toEqual(Object.keys(bad).sort());
    for (const variable of Object.keys(bad)) expect(error.message).toContain(variable);
    expect(error.message).not.toMatch(/^ {2}- HOST:/m);
  });

  it('names the single bad variable and why', () => {
    const error = configError({ BLYTZ_PORT_RANGE: 'thirty' });
    expect(error.problems).toEqual([expect.stringMatching(/^BLYTZ_PORT_RANGE: .*30000-32767/)]);
  });

  it.each([
    ['BLYTZ_PORT_RANGE', '100-200'],
    ['BLYTZ_PORT_RANGE', '30000-70000'],
    ['PORT', '0'],
    ['BLYTZ_WORKERS', '1000'],
  ])('rejects %s=%s', (variable, value) => {
    const error = configError({ [variable]: value });
    expect(error.problems).toHaveLength(1);
    expect(error.problems[0]).toMatch(new RegExp(`^${variable}: `));
  });

  it('takes BLYTZ_ROUTES=ingress (and an ingress class) with the kubernetes runtime', () => {
    const config = loadConfig({ BLYTZ_RUNTIME: 'kubernetes', BLYTZ_ROUTES: 'ingress', BLYTZ_INGRESS_CLASS: 'nginx' });
    expect(config.BLYTZ_ROUTES).toBe('ingress');
    expect(config.BLYTZ_INGRESS_CLASS).toBe('nginx');
  });

  it('rejects BLYTZ_ROUTES=ingress without the kubernetes runtime, naming both variables', () => {
    for (const env of [
      { BLYTZ_ROUTES: 'ingress' },
      { BLYTZ_ROUTES: 'ingress', BLYTZ_RUNTIME: 'docker', BLYTZ_SOURCE: 'kubernetes' },
    ]) {
      const error = configError(env);
      expect(error.problems).toEqual([expect.stringMatching(/^BLYTZ_ROUTES: ingress needs BLYTZ_RUNTIME=kubernetes/)]);
    }
  });

  it("reads who each customer's NetworkPolicy lets in (the ingress controller's pods) and out to (the model gateway's)", () => {
    const defaults = loadConfig({ BLYTZ_RUNTIME: 'kubernetes' });
    expect(defaults.BLYTZ_INGRESS_CONTROLLER_NAMESPACE).toBe('ingress-nginx');
    expect(defaults.BLYTZ_INGRESS_CONTROLLER_PODS).toEqual({ 'app.kubernetes.io/name': 'ingress-nginx' });
    expect(defaults.BLYTZ_MODEL_GATEWAY_PODS).toEqual({ 'app.kubernetes.io/name': 'blytz', 'app.kubernetes.io/component': 'controller' });
    expect(defaults.BLYTZ_MODEL_GATEWAY_PORT).toBeUndefined();
    const set = loadConfig({
      BLYTZ_RUNTIME: 'kubernetes',
      BLYTZ_INGRESS_CONTROLLER_NAMESPACE: 'traefik',
      BLYTZ_INGRESS_CONTROLLER_PODS: 'app.kubernetes.io/name=traefik,tier=edge',
      BLYTZ_MODEL_GATEWAY_PORT: '8090',
    });
    expect(set.BLYTZ_INGRESS_CONTROLLER_PODS).toEqual({ 'app.kubernetes.io/name': 'traefik', tier: 'edge' });
    expect(set.BLYTZ_MODEL_GATEWAY_PORT).toBe(8090);
  });

  it.each([
    ['BLYTZ_ROUTES', 'traefik'],
    ['BLYTZ_INGRESS_CLASS', 'Not_A_Class'],
    ['BLYTZ_INGRESS_CONTROLLER_PODS', 'app in (a,b)'],
    ['BLYTZ_INGRESS_CONTROLLER_PODS', 'app='.padEnd(80, 'x')],
    ['BLYTZ_INGRESS_CONTROLLER_NAMESPACE', 'Ingress'],
    ['BLYTZ_MODEL_GATEWAY_PODS', 'app'],
    ['BLYTZ_MODEL_GATEWAY_PORT', '70000'],
  ])('rejects %s=%s', (variable, value) => {
    const error = configError({ BLYTZ_RUNTIME: 'kubernetes', [variable]: value });
    expect(error.problems).toEqual([expect.stringMatching(new RegExp(`^${variable}: `))]);
  });

  describe('model gateway', () => {
    it('is off by default, with an Anthropic default model and per-plan budgets', () => {
      const config = loadConfig({});
      expect(config.BLYTZ_MODEL_GATEWAY_LISTEN).toBeUndefined();
      expect(config).toMatchObject({
        BLYTZ_MODEL_DEFAULT: 'anthropic/claude-haiku-4-5',
        BLYTZ_MODEL_SOURCE_CHECK: 'runtime',
        BLYTZ_OPENAI_API_BASE: 'https://api.openai.com',
        BLYTZ_ANTHROPIC_API_BASE: 'https://api.anthropic.com',
      });
    });

    it('needs a URL when it listens on every address; a missing platform key only turns included access off', () => {
      const error = configError({ BLYTZ_MODEL_GATEWAY_LISTEN: '0.0.0.0:8090', BLYTZ_MODEL_DEFAULT: 'openai/gpt-5-mini' });
      expect(error.problems).toEqual([
        expect.stringMatching(/^BLYTZ_MODEL_GATEWAY_URL: required when BLYTZ_MODEL_GATEWAY_LISTEN \(0\.0\.0\.0:8090\)/),
      ]);
      // The kits' default address without a key starts (models/included-access.ts says "not offered").
      expect(loadConfig({ BLYTZ_MODEL_GATEWAY_LISTEN: '172.17.0.1:8090' }).BLYTZ_ANTHROPIC_API_KEY).toBeUndefined();
      const config = loadConfig({
        BLYTZ_MODEL_GATEWAY_LISTEN: '[::]:8090',
        BLYTZ_MODEL_GATEWAY_URL: 'http://blytz-model-gateway.blytz.svc:8090',
        BLYTZ_ANTHROPIC_API_KEY: 'sk-ant-x',
      });
      expect(config.BLYTZ_MODEL_GATEWAY_URL).toBe('http://blytz-model-gateway.blytz.svc:8090');
    });

    it('names bad values', () => {
      const error = configError({
        BLYTZ_MODEL_GATEWAY_LISTEN: 'port 8090',
        BLYTZ_MODEL_DEFAULT: 'google/gemini',
        BLYTZ_MODEL_ALLOWED: 'openai/gpt-5-mini,mistral/large',
        BLYTZ_MODEL_BUDGETS: 'gold=5',
        BLYTZ_MODEL_SOURCE_CHECK: 'maybe',
        STRIPE_METER_EVENT_NAME: 'has spaces',
      });
      expect(new Set(error.problems.map((p) => p.split(':')[0]))).toEqual(
        new Set([
          'BLYTZ_MODEL_GATEWAY_LISTEN',
          'BLYTZ_MODEL_DEFAULT',
          'BLYTZ_MODEL_ALLOWED',
          'BLYTZ_MODEL_BUDGETS',
          'BLYTZ_MODEL_SOURCE_CHECK',
          'STRIPE_METER_EVENT_NAME',
        ]),
      );
      expect(error.problems.find((p) => p.startsWith('BLYTZ_MODEL_BUDGETS'))).toContain('"gold" is not a plan');
    });
  });

  it('does not echo secret values in the error', () => {
    const error = configError({ BLYTZ_ADMIN_TOKEN: 'short', BLYTZ_SECRET_KEY: 'bm90LWEta2V5' });
    expect(error.message).not.toContain('bm90LWEta2V5');
    expect(error.message).toContain('BLYTZ_SECRET_KEY');
  });

  describe('secrets from files (<NAME>_FILE)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'blytz-config-'));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));
    const secretFile = (name: string, content: string) => {
      const path = join(dir, name);
      writeFileSync(path, content, { mode: 0o600 });
      return path;
    };
    const KEY = Buffer.alloc(32, 7).toString('base64');

    it('reads each secret from its file, dropping one trailing newline', () => {
      const config = loadConfig({
        DATABASE_URL_FILE: secretFile('db', 'postgres://blytz:pw@db/blytz\n'),
        BLYTZ_ADMIN_TOKEN_FILE: secretFile('admin', 'an-admin-token-of-32-characters!\n'),
        BLYTZ_SECRET_KEY_FILE: secretFile('key', `${KEY}\n`),
        STRIPE_SECRET_KEY_FILE: secretFile('stripe', 'sk_test_fromafile'),
        STRIPE_WEBHOOK_SECRET_FILE: secretFile('whsec', 'whsec_fromafile\n'),
      });
      expect(config).toMatchObject({
        DATABASE_URL: 'postgres://blytz:pw@db/blytz',
        BLYTZ_ADMIN_TOKEN: 'an-admin-token-of-32-characters!',
        BLYTZ_SECRET_KEY: KEY,
        STRIPE_SECRET_KEY: 'sk_test_fromafile',
        STRIPE_WEBHOOK_SECRET: 'whsec_fromafile',
      });
    });

    it('a missing file or both forms set fail start, named, with the other problems and without the values', () => {
      const error = configError({
        STRIPE_SECRET_KEY_FILE: join(dir, 'nope'),
        BLYTZ_ADMIN_TOKEN: 'direct-admin-token-value-123456',
        BLYTZ_ADMIN_TOKEN_FILE: secretFile('admin2', 'file-admin-token-value-1234567'),
        PORT: 'eighty',
      });
      expect(error.problems).toHaveLength(3);
      expect(error.problems).toEqual(
        expect.arrayContaining([
          `STRIPE_SECRET_KEY_FILE: cannot read ${join(dir, 'nope')} (ENOENT)`,
          'BLYTZ_ADMIN_TOKEN: set BLYTZ_ADMIN_TOKEN or BLYTZ_ADMIN_TOKEN_FILE, not both',
          expect.stringMatching(/^PORT: /),
        ]),
      );
      expect(error.message).not.toContain('admin-token-value');
    });

    it("the platform's model provider keys come from files too", () => {
      const config = loadConfig({
        BLYTZ_MODEL_GATEWAY_LISTEN: '172.30.0.1:8090',
        BLYTZ_ANTHROPIC_API_KEY_FILE: secretFile('anthropic', 'sk-ant-fromafile\n'),
        BLYTZ_OPENAI_API_KEY_FILE: secretFile('openai', 'sk-fromafile'),
      });
      expect(config).toMatchObject({ BLYTZ_ANTHROPIC_API_KEY: 'sk-ant-fromafile', BLYTZ_OPENAI_API_KEY: 'sk-fromafile' });
    });

    it('values from files are validated like the rest', () => {
      const error = configError({ BLYTZ_SECRET_KEY_FILE: secretFile('badkey', 'not-a-key\n') });
      expect(error.problems).toEqual([expect.stringMatching(/^BLYTZ_SECRET_KEY: /)]);
    });
  });
});
