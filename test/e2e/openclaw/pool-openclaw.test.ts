import { execFile, execFileSync } from 'node:child_process';
import { chownSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { networkInterfaces } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPENCLAW_IMAGE } from '../../../src/domain/openclaw.js';
import { docker, instanceContainers, operatorCli, startServe, withServerLog, type Served } from '../../support/blytz-serve.js';
import { openSession } from '../../support/billing-app.js';
import { startFakeBotApi, type FakeBotApi } from '../../support/fake-bot-api.js';
import { startFakeModelProvider, type FakeModelProvider } from '../../support/fake-model-provider.js';
import { completedSessionObject, FAKE_PRICE_ID, FAKE_SECRET_KEY, signatureHeader, startFakeStripe, stripeEvent, type FakeStripe } from '../../support/fake-stripe.js';
import { getWithHost } from '../../support/http-get.js';
import { createTestDatabase, type TestDatabase } from '../../support/postgres.js';
import { STATUS_POLL_MS } from '../../support/status-poll.js';
import { openHostPortsToCustomers } from '../../support/tenant-firewall.js';
import { waitFor } from '../../support/wait-for.js';

const WEBHOOK_SECRET = 'whsec_e2e_pool_openclaw_0123456789';
const WARM_BOT = `6161616161:${'W'.repeat(35)}`;
const COLD_BOT = `6262626262:${'K'.repeat(35)}`;
/** The warm customer's own Anthropic key, the one the fake provider accepts. */
const WARM_MODEL_KEY = 'sk-ant-warm-own-key-0123456789abcdef';
const STEP_MS = 300_000;

/** The containers' bridge gateway: where a container reaches the host (our fake Bot API). */
function bridgeGateway(): string {
  const out = execFileSync('docker', ['network', 'inspect', 'bridge', '--format', '{{range .IPAM.Config}}{{.Gateway}}{{end}}'], { encoding: 'utf8' }).trim();
  return out || '172.17.0.1';
}

/** A non-loopback address of this host: a client Caddy forwards from it is remote to the gateway (see real-assistant.test.ts). */
function remoteClientAddress(): string {
  for (const [name, addresses] of Object.entries(networkInterfaces())) {
    if (name === 'lo' || name.startsWith('docker') || name.startsWith('br-') || name.startsWith('veth')) continue;
    const v4 = addresses?.find((a) => a.family === 'IPv4' && !a.internal);
    if (v4) return v4.address;
  }
  throw new Error('this host has no non-loopback IPv4 address to act as a remote client from');
}

/**
 * Warm pools on the REAL OpenClaw gateway (the pinned image): a pre-started gateway of the pool
 * takes a paying customer's configuration (its gateway token, allowed origins, Telegram bot) in
 * place, without a restart, and serves them; a customer paying with the pool at size 0 waits for
 * a gateway to boot. Both times, payment (the signed webhook) to Ready, are printed beside each
 * other; docs/benchmarks.md records them. No timed assertion: what is asserted is that the warm
 * customer runs on the slot's container, reloaded, not restarted (their own model key included:
 * it goes where OpenClaw reloads it hot), that the Telegram bot started for them, and that the
 * agent calls its model provider with the customer's key.
 */
describe('warm pools on the real OpenClaw gateway: paid to ready, warm versus cold', () => {
  let db: TestDatabase;
  let stripe: FakeStripe;
  let bot: FakeBotApi;
  let provider: FakeModelProvider;
  let closeHostPorts: (() => Promise<void>) | undefined;
  let served: Served;
  let client: string;
  const figures: Record<string, number> = {};

  beforeAll(async () => {
    client = remoteClientAddress();
    db = await createTestDatabase();
    stripe = await startFakeStripe();
    bot = await startFakeBotApi();
    // Stands in for api.anthropic.com, which an assistant with its own key calls directly.
    provider = await startFakeModelProvider({ anthropicKey: WARM_MODEL_KEY, host: '0.0.0.0' });
    provider.reply = 'pong from the provider';
    closeHostPorts = await openHostPortsToCustomers([bot.port, provider.port]);
    served = await startServe({
      databaseUrl: db.url,
      env: {
        BLYTZ_CUSTOMER_IMAGE: OPENCLAW_IMAGE,
        STRIPE_SECRET_KEY: FAKE_SECRET_KEY,
        STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
        STRIPE_PRICE_ID: FAKE_PRICE_ID,
        STRIPE_API_BASE: stripe.url,
        TELEGRAM_API_BASE: bot.urlFor(bridgeGateway()),
      },
    });
  });
  afterAll(async () => {
    if (Object.keys(figures).length > 0) console.log(`warm pool, real OpenClaw: ${JSON.stringify(figures)}`);
    await served?.stop();
    await closeHostPorts?.();
    await provider?.close();
    await bot?.close();
    await stripe?.close();
    await db?.drop();
  });

  const cli = (...args: string[]) => operatorCli(served, ...args);
  const poolStatus = async () => (JSON.parse(await cli('get', 'pool', 'personal', '-o', 'json')) as { status: Record<string, number> }).status;
  const applyPool = async (size: number) => {
    const file = join(served.dataDir, `pool-${size}.yaml`);
    writeFileSync(file, `apiVersion: blytz.cloud/v1alpha1\nkind: Pool\nmetadata:\n  name: personal\nspec:\n  size: ${size}\n`);
    await cli('apply', '-f', file);
  };
  const configPath = (name: string) => join(served.dataDir, 'customers', name, 'openclaw.json');
  const gatewayLog = (id: string) => execFileSync('docker', ['logs', id], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  /** Adds `models.providers.anthropic.baseUrl` to a customer's openclaw.json as an operator would: a whole new file, renamed over, same owner. */
  const setProviderBaseUrl = (name: string, baseUrl: string) => {
    const path = configPath(name);
    const config = JSON.parse(readFileSync(path, 'utf8')) as { models: { providers: Record<string, Record<string, unknown>> } };
    config.models.providers['anthropic'] = { ...config.models.providers['anthropic'], baseUrl };
    const { uid, gid } = statSync(path);
    writeFileSync(`${path}.test-edit`, `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
    chownSync(`${path}.test-edit`, uid, gid);
    renameSync(`${path}.test-edit`, path);
  };
  const logged = <T>(promise: Promise<T>) =>
    promise.catch((error: unknown) => {
      throw withServerLog(served, error);
    });

  /**
   * Signup, then the signed payment; resolves once the status page says Ready, with the time from
   * payment to the Ready condition's own transition time (the controller's clock is this one), so
   * the figure does not depend on how often the page is asked: at the status API's pace
   * (STATUS_POLL_MS; a 100 ms poll ran into its rate limit during a cold start, and every answer
   * was 429 until the minute ended).
   */
  async function payAndWait(botToken: string, label: string, modelApiKey = `sk-ant-${label}-own-key`): Promise<{ name: string; ms: number }> {
    const signup = await fetch(`${served.url}/api/signup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      // A model key of the customer's own: this server runs no model gateway (included access is not offered).
      body: JSON.stringify({
        email: `${label}-${Date.now()}@example.com`,
        name: 'Ada',
        instructions: 'I study engines.',
        telegramBotToken: botToken,
        modelProvider: 'anthropic',
        modelApiKey,
      }),
    });
    expect(signup.status).toBe(201);
    const body = (await signup.json()) as { customerId: string; statusUrl: string };
    const token = (await openSession(served.url, new URL(body.statusUrl, served.url).href)).session as string;
    const session = [...stripe.sessions.values()].find((s) => s.client_reference_id === body.customerId);
    const payload = JSON.stringify(stripeEvent('checkout.session.completed', completedSessionObject(session!)));
    const paidAt = Date.now();
    const paid = await fetch(`${served.url}/api/webhooks/stripe`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'stripe-signature': signatureHeader(payload, WEBHOOK_SECRET) },
      body: payload,
    });
    expect(paid.status).toBe(200);
    const readyAt = await logged(
      waitFor(async () => {
        const res = await fetch(`${served.url}/api/customers/${body.customerId}/status`, { headers: { authorization: `Bearer ${token}` } });
        if (!res.ok) throw new Error(`status API answered ${res.status}: ${await res.text()}`);
        const view = (await res.json()) as { ready: boolean; conditions: Array<{ type: string; lastTransitionTime: string }> };
        return view.ready ? Date.parse(view.conditions.find((c) => c.type === 'Ready')?.lastTransitionTime ?? '') : undefined;
      }, STEP_MS - 30_000, STATUS_POLL_MS),
    );
    expect(readyAt).toBeGreaterThanOrEqual(paidAt);
    return { name: body.customerId, ms: readyAt - paidAt };
  }

  it('a customer paying while a slot is ready is served by that gateway, reconfigured in place', { timeout: STEP_MS }, async () => {
    await applyPool(1);
    await logged(waitFor(async () => (await poolStatus()).ready === 1, STEP_MS - 60_000, 500));
    const [slot] = (await instanceContainers(served.instance)).filter((c) => c.Labels['cloud.blytz.pool-slot'] !== undefined);
    const stats = await docker.getContainer(slot!.Id).stats({ stream: false });
    const inactive = (stats.memory_stats.stats as Record<string, number> | undefined)?.['inactive_file'] ?? 0;
    figures['idleSlotMemoryMiB'] = Math.round((stats.memory_stats.usage - inactive) / 2 ** 20);

    const { name, ms } = await payAndWait(WARM_BOT, 'warm', WARM_MODEL_KEY);
    figures['paidToReadyWarmMs'] = ms;
    const [container] = (await instanceContainers(served.instance)).filter((c) => c.Names[0] === `/blytz-${name}`);
    expect(container?.Id).toBe(slot!.Id);
    const inspect = await docker.getContainer(slot!.Id).inspect();
    // Reconfigured in place: the container that booted as the slot is the one serving, never
    // recreated or restarted by the engine, and the gateway process never restarted either.
    // The customer's own model key is in `models.providers.anthropic.apiKey`, which OpenClaw
    // reloads hot (in `env.vars`, where it was rendered before, it costs an in-process restart
    // of the gateway: "config change requires gateway restart (env)", then about 13 s).
    expect(inspect.RestartCount).toBe(0);
    const config = JSON.parse(readFileSync(configPath(name), 'utf8')) as { env?: unknown; models?: { providers?: Record<string, { apiKey?: string }> } };
    expect(config.models?.providers?.['anthropic']?.apiKey).toBe(WARM_MODEL_KEY);
    expect(config.env).toBeUndefined();
    const log = gatewayLog(slot!.Id);
    expect(log).toMatch(/config hot reload applied \([^)]*gateway\.auth\.token/);
    expect(log).toMatch(/config hot reload applied \([^)]*\bmodels\b/);
    expect(log).not.toMatch(/requires gateway restart|restart mode: in-process restart/);
    expect(JSON.stringify(inspect.Config.Env)).not.toContain(WARM_MODEL_KEY);
    // Its bot started for them (the channel came with the reload), and it answers through Caddy on their subdomain.
    await logged(waitFor(() => bot.calls.some((c) => c.token === WARM_BOT && c.method === 'getUpdates'), 60_000, 200));
    const ready = await getWithHost(served.caddyListenPort, `${name}.blytz.localhost`, '/readyz', { address: client, timeoutMs: 10_000 });
    expect(ready.status, ready.body).toBe(200);
    expect(JSON.parse(ready.body)).toMatchObject({ ready: true });
    expect(await cli('describe', 'customer', name)).toContain('PoolSlotBound');

    // The key reaches the agent: with the provider's endpoint pointed at the fake (a field the
    // controller does not own, so it keeps it; reloaded hot too), one agent turn calls the
    // provider with the customer's own key, and the answer comes back.
    setProviderBaseUrl(name, `http://${bridgeGateway()}:${provider.port}`);
    await logged(waitFor(() => /config hot reload applied \([^)]*models\.providers\.anthropic\.baseUrl/.test(gatewayLog(slot!.Id)), 60_000, 200));
    const turn = await promisify(execFile)(
      'docker',
      ['exec', slot!.Id, 'openclaw', 'agent', '--agent', 'main', '--message', 'ping', '--timeout', '240'],
      { timeout: 280_000 },
    );
    const calls = provider.requests.filter((r) => r.api === 'anthropic-messages');
    expect(calls.length, turn.stdout + turn.stderr).toBeGreaterThan(0);
    expect(calls.every((r) => r.headers['x-api-key'] === WARM_MODEL_KEY)).toBe(true);
    expect(turn.stdout).toContain('pong from the provider');
    expect(gatewayLog(slot!.Id)).not.toMatch(/requires gateway restart|restart mode: in-process restart/);
  });

  it('with the pool at size 0 a paying customer waits for a gateway to boot (the cold figure)', { timeout: STEP_MS }, async () => {
    await applyPool(0);
    await logged(
      waitFor(async () => (await instanceContainers(served.instance)).every((c) => !c.Names[0]?.startsWith('/blytz-pool_')), 120_000, 500),
    );
    const { name, ms } = await payAndWait(COLD_BOT, 'cold');
    figures['paidToReadyColdMs'] = ms;
    const [container] = (await instanceContainers(served.instance)).filter((c) => c.Names[0] === `/blytz-${name}`);
    expect(container?.Labels['cloud.blytz.pool-slot']).toBeUndefined();
    expect(container?.Labels['cloud.blytz.customer']).toBe(name);
  });
});
