import { execFileSync } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { sql } from 'kysely';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OPENCLAW_IMAGE } from '../../../src/domain/openclaw.js';
import { docker, freePort, instanceContainers, startServe, withServerLog, type Served } from '../../support/blytz-serve.js';
import { startFakeBotApi, type FakeBotApi } from '../../support/fake-bot-api.js';
import { FAKE_ANTHROPIC_KEY, startFakeModelProvider, type FakeModelProvider } from '../../support/fake-model-provider.js';
import { completedSessionObject, FAKE_PRICE_ID, FAKE_SECRET_KEY, signatureHeader, startFakeStripe, stripeEvent, type FakeStripe } from '../../support/fake-stripe.js';
import { openSession } from '../../support/billing-app.js';
import { getWithHost } from '../../support/http-get.js';
import { openHostPortsToCustomers } from '../../support/tenant-firewall.js';
import { remoteClientAddress } from '../../support/remote-client.js';
import { createTestDatabase, type TestDatabase } from '../../support/postgres.js';
import { STATUS_POLL_MS } from '../../support/status-poll.js';
import { waitFor } from '../../support/wait-for.js';

/**
 * The whole path on the REAL OpenClaw gateway (the pinned image, built locally from the npm
 * package), real Docker, real Caddy and real Postgres: a signup paid by a signed webhook becomes a
 * gateway whose /healthz and /readyz answer through the customer's subdomain, whose Control UI
 * accepts the customer's own origin, and whose Telegram bot (pointed at a local Bot API server)
 * answers a stranger with a pairing code that the customer approves on their status page; the
 * paired user's messages then reach the agent, which answers through the included model (the
 * control plane's model gateway, in front of a local stand-in for the provider's API). The
 * approval and the customer's memory survive a re-render, a restart, a crash (SIGKILL), a
 * suspend/resume and a version rollout.
 *
 * Slow by nature (each start of the gateway is 20 to 60 s of its own work), so it is one
 * customer taken through every step in order.
 */

const WEBHOOK_SECRET = 'whsec_e2e_real_assistant_0123456789';
const BOT_TOKEN = `5151515151:${'R'.repeat(35)}`;
const STRANGER = { id: 777001, firstName: 'Ada', username: 'ada_l' };
const STEP_MS = 300_000;

/** The containers' bridge gateway: where a container reaches the host (our fake Bot API). */
function bridgeGateway(): string {
  const out = execFileSync('docker', ['network', 'inspect', 'bridge', '--format', '{{range .IPAM.Config}}{{.Gateway}}{{end}}'], {
    encoding: 'utf8',
  }).trim();
  return out || '172.17.0.1';
}

describe('the real OpenClaw gateway, from payment to a paired Telegram user', () => {
  let db: TestDatabase;
  let stripe: FakeStripe;
  let bot: FakeBotApi;
  let provider: FakeModelProvider;
  let work: string;
  let closeHostPorts: (() => Promise<void>) | undefined;
  let served: Served;
  let name: string;
  let token: string;
  let client: string;
  const host = () => `${name}.blytz.localhost`;
  const origin = () => `http://${host()}:${served.caddyListenPort}`;
  const customerDir = () => join(served.dataDir, 'customers', name);
  const config = () => JSON.parse(readFileSync(join(customerDir(), 'openclaw.json'), 'utf8')) as Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

  beforeAll(async () => {
    client = remoteClientAddress();
    db = await createTestDatabase();
    stripe = await startFakeStripe();
    bot = await startFakeBotApi();
    provider = await startFakeModelProvider();
    provider.reply = 'Four strokes: intake, compression, power, exhaust.';
    work = mkdtempSync(join(tmpdir(), 'blytz-e2e-real-'));
    writeFileSync(join(work, 'anthropic-key'), `${FAKE_ANTHROPIC_KEY}\n`, { mode: 0o600 });
    const gatewayPort = await freePort();
    const gateway = `${bridgeGateway()}:${gatewayPort}`;
    // The tenant firewall (deploy/host/blytz-tenants.nft) lets customer containers reach only the
    // host ports an operator lists: here the model gateway's, and the Bot API stand-in's (in
    // production Telegram is on the internet, which customers reach freely).
    closeHostPorts = await openHostPortsToCustomers([gatewayPort, bot.port]);
    served = await startServe({
      databaseUrl: db.url,
      env: {
        BLYTZ_CUSTOMER_IMAGE: OPENCLAW_IMAGE,
        // Included model access: customers' containers reach the gateway on their bridge's address.
        BLYTZ_MODEL_GATEWAY_LISTEN: gateway,
        BLYTZ_MODEL_DEFAULT: 'anthropic/claude-haiku-4-5',
        BLYTZ_ANTHROPIC_API_KEY_FILE: join(work, 'anthropic-key'),
        BLYTZ_ANTHROPIC_API_BASE: provider.url,
        STRIPE_SECRET_KEY: FAKE_SECRET_KEY,
        STRIPE_WEBHOOK_SECRET: WEBHOOK_SECRET,
        STRIPE_PRICE_ID: FAKE_PRICE_ID,
        STRIPE_API_BASE: stripe.url,
        // The controller checks the token here, and each gateway polls it from its container.
        TELEGRAM_API_BASE: bot.urlFor(bridgeGateway()),
        BLYTZ_ROLLOUT_START_TIMEOUT_SECONDS: '600',
      },
    });
  });
  afterAll(async () => {
    await served?.stop();
    await closeHostPorts?.();
    await provider?.close();
    if (work) rmSync(work, { recursive: true, force: true });
    await bot?.close();
    await stripe?.close();
    await db?.drop();
  });

  /** GET through Caddy from a remote client address, with the customer's Host. */
  const viaCaddy = (path: string, headers: Record<string, string> = {}) =>
    getWithHost(served.caddyListenPort, host(), path, { address: client, headers, timeoutMs: 10_000 });

  const status = async () => {
    const res = await fetch(`${served.url}/api/customers/${name}/status`, { headers: { authorization: `Bearer ${token}` } });
    // A refusal (a 429 above all) is an error, never read as "not ready".
    if (!res.ok) throw new Error(`status API answered ${res.status}: ${await res.text()}`);
    return (await res.json()) as { phase: string; ready: boolean; conditions: Array<{ type: string; message: string }> };
  };
  const untilReady = () =>
    waitFor(async () => ((await status()).ready ? true : undefined), STEP_MS - 10_000, STATUS_POLL_MS).catch(async (error: unknown) => {
      const last = await status().then((s) => JSON.stringify(s), (e: unknown) => (e as Error).message);
      throw withServerLog(served, new Error(`${(error as Error).message}; status: ${last}`));
    });

  /**
   * After a crash OpenClaw may first send a notice about the reply before it, whose delivery it
   * had not recorded when SIGKILL came (whether it had is a race inside OpenClaw): that notice is
   * not the answer to this message, so it is passed over.
   */
  const isPendingDeliveryNotice = (text: string) => /couldn.t confirm whether my previous reply reached this chat/.test(text);
  /**
   * The stranger writes; resolves to the bot's reply. Its wait is generous: the gateway answers
   * /readyz before its Telegram channel polls, and on a loaded machine (seven engineers' tests on
   * two cores) the first answer after a resume came just over two minutes after ready.
   */
  const ANSWER_MS = 240_000;
  const strangerSays = async (text: string) => {
    const since = bot.sent.length;
    bot.userSays(BOT_TOKEN, STRANGER, text);
    return bot.waitForMessage(STRANGER.id, (reply) => !isPendingDeliveryNotice(reply), { since, timeoutMs: ANSWER_MS }).catch(async (error: unknown) => {
      const [container] = await instanceContainers(served.instance, name);
      const logs = container ? execFileSync('docker', ['logs', '--tail', '60', container.Id], { encoding: 'utf8' }) : '(no container)';
      const methods = bot.calls.slice(-30).map((c) => c.method).join(' ');
      throw new Error(`${(error as Error).message}\nlast Bot API calls: ${methods}\ngateway log:\n${logs}`);
    });
  };
  const isPairingPrompt = (text: string) => /pairing code/i.test(text);
  /** The paired user's message reached the agent, and its answer (from the included model) came back. */
  const expectAgentAnswer = async (text: string) => {
    const reply = await strangerSays(text);
    expect(isPairingPrompt(reply.text), reply.text).toBe(false);
    expect(reply.text).toContain('intake, compression, power, exhaust');
  };

  it('pays and gets a gateway that is Ready, probed by what it answers, through its own subdomain', { timeout: STEP_MS }, async () => {
    const signup = await fetch(`${served.url}/api/signup`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ email: `real-${Date.now()}@example.com`, name: 'Ada', instructions: 'I study engines.\n- keep my notes', telegramBotToken: BOT_TOKEN }),
    });
    expect(signup.status).toBe(201);
    const body = (await signup.json()) as { customerId: string; statusUrl: string };
    name = body.customerId;
    // The signup's status link holds a single-use access token: opening it gives the session.
    const opened = await openSession(served.url, new URL(body.statusUrl, served.url).href);
    token = opened.session as string;
    expect(token).toBeTruthy();
    const session = [...stripe.sessions.values()].find((s) => s.client_reference_id === name);
    const payload = JSON.stringify(stripeEvent('checkout.session.completed', completedSessionObject(session!)));
    const paid = await fetch(`${served.url}/api/webhooks/stripe`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'stripe-signature': signatureHeader(payload, WEBHOOK_SECRET) },
      body: payload,
    });
    expect(paid.status).toBe(200);
    await untilReady();

    // The gateway's own probes through Caddy and the customer's subdomain, as JSON, not a page.
    const health = await viaCaddy('/healthz');
    expect(health.status).toBe(200);
    expect(JSON.parse(health.body)).toMatchObject({ ok: true, status: 'live' });
    const ready = await viaCaddy('/readyz');
    expect(ready.status, ready.body).toBe(200);
    expect(JSON.parse(ready.body)).toMatchObject({ ready: true });

    // It runs as the image says, with the plan's limits, a read-only root and no secret in its env.
    const [container] = await instanceContainers(served.instance, name);
    const inspect = await docker.getContainer(container!.Id).inspect();
    expect(inspect.Config.Image).toBe(OPENCLAW_IMAGE);
    expect(inspect.HostConfig.ReadonlyRootfs).toBe(true);
    expect(inspect.HostConfig.Memory).toBe(1536 * 1024 * 1024);
    expect(inspect.Config.Env).toContain('NODE_OPTIONS=--max-old-space-size=768');
    expect(JSON.stringify(inspect)).not.toContain(BOT_TOKEN);
    // The config the gateway runs on is the controller's fields merged with what OpenClaw wrote.
    expect(config().gateway.controlUi.allowedOrigins).toContain(origin());
    expect(config().channels.telegram).toMatchObject({ enabled: true, dmPolicy: 'pairing' });
  });

  it('serves the Control UI to the customer\'s own origin and refuses another', { timeout: STEP_MS }, async () => {
    const page = await viaCaddy('/', { origin: origin() });
    expect(page.status).toBe(200);
    expect(page.body).toMatch(/<html/i);
    // The gateway checks a browser's Origin when it connects: after its connect.challenge, a
    // connect request from a foreign origin is refused with CONTROL_UI_ORIGIN_NOT_ALLOWED; from the
    // customer's own origin it passes that check (and asks for the browser's device identity next).
    const connectAnswer = (from: string) =>
      new Promise<string>((resolve, reject) => {
        const ws = new WebSocket(`ws://${client}:${served.caddyListenPort}/`, { headers: { host: host() }, origin: from });
        const timer = setTimeout(() => {
          ws.terminate();
          reject(new Error(`no connect answer for origin ${from}`));
        }, 30_000);
        ws.on('message', (data) => {
          const message = JSON.parse(String(data)) as { event?: string; type?: string; ok?: boolean; error?: { details?: { code?: string } } };
          if (message.event === 'connect.challenge') {
            ws.send(
              JSON.stringify({
                type: 'req',
                id: 'connect-1',
                method: 'connect',
                params: {
                  minProtocol: 4,
                  maxProtocol: 4,
                  client: { id: 'openclaw-control-ui', version: '1.0.0', platform: 'web', mode: 'ui' },
                  role: 'operator',
                  scopes: ['operator.read'],
                },
              }),
            );
          } else if (message.type === 'res') {
            clearTimeout(timer);
            ws.close();
            resolve(message.ok ? 'ok' : (message.error?.details?.code ?? 'error'));
          }
        });
        ws.once('error', (error) => {
          clearTimeout(timer);
          reject(error);
        });
      });
    expect(await connectAnswer('http://evil.example')).toBe('CONTROL_UI_ORIGIN_NOT_ALLOWED');
    expect(await connectAnswer(origin())).not.toBe('CONTROL_UI_ORIGIN_NOT_ALLOWED');
  });

  it('a stranger gets a pairing code from the bot; the customer approves it on the status API', { timeout: STEP_MS }, async () => {
    const reply = await strangerSays('hello, who are you?');
    expect(isPairingPrompt(reply.text)).toBe(true);
    const code = /\b([A-Z0-9]{8})\b/.exec(reply.text)?.[1];
    expect(code).toBeDefined();
    const approve = await fetch(`${served.url}/api/customers/${name}/pairing`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ code }),
    });
    expect(approve.status, await approve.clone().text()).toBe(200);
    expect(await approve.json()).toEqual({ approved: true });
    // OpenClaw recorded its owner in its own config: a field the controller does not own.
    expect(config().commands?.ownerAllowFrom).toEqual([`telegram:${STRANGER.id}`]);
    // Now paired: the next message goes to the agent, which answers through the model gateway.
    const before = provider.requests.length;
    await expectAgentAnswer('How many strokes does an Otto engine have?');
    expect(provider.requests.length).toBeGreaterThan(before);
    // Metered for the customer, from the provider's own usage fields.
    const usage = await fetch(`${served.url}/api/customers/${name}/model-usage`, { headers: { authorization: `Bearer ${token}` } });
    expect(usage.status).toBe(200);
    const view = (await usage.json()) as { access: string; usedTokens: number };
    expect(view.access).toBe('included');
    expect(view.usedTokens).toBeGreaterThan(0);
  });

  it('the approval and the memory survive a re-render, a restart, a crash and a suspend/resume', { timeout: STEP_MS * 4 }, async () => {
    // The assistant's memory: a file it wrote in its workspace (as uid 1000, like the agent).
    const memory = join(customerDir(), 'workspace', 'memory');
    mkdirSync(memory, { recursive: true });
    writeFileSync(join(memory, 'notes.md'), 'the Otto cycle has four strokes\n');
    chownSync(memory, 1000, 1000);
    chownSync(join(memory, 'notes.md'), 1000, 1000);
    const [before] = await instanceContainers(served.instance, name);

    // Re-render: new instructions (and the controller enforces its fields) keep OpenClaw's.
    await sql`UPDATE customers SET instructions = ${'I study turbines now.\n- keep my notes'} WHERE name = ${name}`.execute(db.handle.db);
    await waitFor(() => readFileSync(join(customerDir(), 'workspace', 'AGENTS.md'), 'utf8').includes('turbines'), 60_000);
    expect(config().commands?.ownerAllowFrom).toEqual([`telegram:${STRANGER.id}`]);
    expect((await instanceContainers(served.instance, name))[0]?.Id).toBe(before?.Id);
    await expectAgentAnswer('after the re-render');

    /**
     * `stop` the gateway's process (a restart, a kill), then see it through: the customer goes
     * not-ready (the gateway needs 20 to 60 s to start again, a window a 1 s poll cannot miss;
     * waiting for "ready" alone could pass on the status from before), is ready again, and runs
     * in the same container as a new process.
     */
    const throughRestart = async (stop: () => Promise<unknown>) => {
      const startedBefore = Date.parse((await docker.getContainer(before!.Id).inspect()).State.StartedAt);
      await stop();
      await waitFor(async () => ((await status()).ready ? undefined : true), 60_000, STATUS_POLL_MS);
      await untilReady();
      const after = await docker.getContainer(before!.Id).inspect();
      expect(Date.parse(after.State.StartedAt)).toBeGreaterThan(startedBefore);
    };

    // Restart: the engine restarts the gateway process; the controller sees it through.
    await throughRestart(() => docker.getContainer(before!.Id).restart());
    await expectAgentAnswer('after the restart');

    // A crash (SIGKILL: no shutdown, no lock released): it comes back all the same. OpenClaw's
    // owner lock lives on a tmpfs that dies with the process, not in the state folder, where a
    // stale one would refuse every later start ("Another Gateway owner lease is still active").
    await throughRestart(() => docker.getContainer(before!.Id).kill());
    await expectAgentAnswer('after the crash');

    // Suspend and resume: stopped, kept, started again.
    await sql`UPDATE customers SET state = 'suspended' WHERE name = ${name}`.execute(db.handle.db);
    await waitFor(async () => ((await status()).phase === 'Suspended' ? true : undefined), 120_000, STATUS_POLL_MS);
    await sql`UPDATE customers SET state = 'active' WHERE name = ${name}`.execute(db.handle.db);
    await untilReady();
    expect((await instanceContainers(served.instance, name))[0]?.Id).toBe(before?.Id);
    await expectAgentAnswer('after the suspension');
    expect(readFileSync(join(memory, 'notes.md'), 'utf8')).toBe('the Otto cycle has four strokes\n');
  });

  it('a version rollout recreates the gateway on the new image and keeps the memory and the approval', { timeout: STEP_MS + ANSWER_MS }, async () => {
    // The "new version": the same package under another tag, so a fleet change whose gateway starts.
    const next = `${OPENCLAW_IMAGE}-next`;
    execFileSync('docker', ['tag', OPENCLAW_IMAGE, next]);
    {
      const [before] = await instanceContainers(served.instance, name);
      await served.stopProcess();
      served.env.BLYTZ_CUSTOMER_IMAGE = next;
      await served.restart();
      await waitFor(async () => {
        const [c] = await instanceContainers(served.instance, name);
        return c && c.Id !== before?.Id && c.Image === next ? true : undefined;
      }, STEP_MS - 60_000);
      await untilReady();
      expect(readFileSync(join(customerDir(), 'workspace', 'memory', 'notes.md'), 'utf8')).toContain('Otto');
      expect(config().commands?.ownerAllowFrom).toEqual([`telegram:${STRANGER.id}`]);
      await expectAgentAnswer('after the upgrade');
    }
  });
});
