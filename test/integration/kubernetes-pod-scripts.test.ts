import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { lstat, mkdir, mkdtemp, readFile, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { PROBE_CLIENT_ADDRESS } from '../../src/domain/probes.js';
import { probeCommand, seedCommand } from '../../src/runtime/kubernetes/pod-scripts.js';
import { applyOwnedConfig, type JsonObject } from '../../src/workspace/openclaw-config.js';

const run = promisify(execFile);

/**
 * The programs a customer's pod runs for the controller (the exec probes and the seed init
 * container), run here by this machine's Node as the kubelet would run them in the container:
 * the command exactly as the Deployment carries it.
 */
async function exec(command: string[]): Promise<{ code: number; stderr: string }> {
  const [, ...args] = command;
  try {
    const { stderr } = await run(process.execPath, args);
    return { code: 0, stderr };
  } catch (error) {
    const failure = error as { code?: number; stderr?: string };
    return { code: failure.code ?? -1, stderr: failure.stderr ?? '' };
  }
}

describe('the exec probe (a kubelet httpGet probe checks only the status code)', () => {
  let server: Server;
  let port: number;
  const seen: Array<{ url: string; forwardedFor: string | undefined }> = [];
  const answers = new Map<string, { status: number; body: string }>([
    ['/healthz', { status: 200, body: '{"ok":true,"status":"live"}' }],
    ['/readyz', { status: 200, body: '{"ready":false,"failing":["telegram"]}' }],
    ['/broken', { status: 500, body: '{"ok":false}' }],
    ['/list', { status: 200, body: '[{"ok":true}]' }],
  ]);

  beforeAll(async () => {
    server = createServer((req, res) => {
      seen.push({ url: req.url ?? '', forwardedFor: req.headers['x-forwarded-for'] as string | undefined });
      // Like the OpenClaw gateway: every unknown path answers 200 with the Control UI page.
      const answer = answers.get(req.url ?? '') ?? { status: 200, body: '<!doctype html><title>OpenClaw Control</title>' };
      res.writeHead(answer.status, { 'content-type': answer.body.startsWith('<') ? 'text/html' : 'application/json' });
      res.end(answer.body);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const probe = (path: string, expect: Record<string, string | number | boolean>) =>
    exec(probeCommand({ path, expect }, port, PROBE_CLIENT_ADDRESS));

  it('passes on 200 with a JSON object holding every declared field, naming a client', async () => {
    expect(await probe('/healthz', { ok: true, status: 'live' })).toEqual({ code: 0, stderr: '' });
    expect(seen.at(-1)).toEqual({ url: '/healthz', forwardedFor: PROBE_CLIENT_ADDRESS });
  });

  it("fails on the Control UI's 200 page, a field that differs, a 500, a body that is not an object, and nothing listening", async () => {
    expect(await probe('/startupz', { ok: true })).toMatchObject({ code: 1, stderr: expect.stringMatching(/not with JSON/) });
    expect(await probe('/readyz', { ready: true })).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/ready=false \(expected true\)/),
    });
    expect(await probe('/broken', { ok: false })).toMatchObject({ code: 1, stderr: expect.stringMatching(/answered 500/) });
    expect(await probe('/list', { ok: true })).toMatchObject({ code: 1, stderr: expect.stringMatching(/not an object/) });
    const closed = await exec(probeCommand({ path: '/healthz', expect: { ok: true } }, 1, PROBE_CLIENT_ADDRESS));
    expect(closed).toMatchObject({ code: 1, stderr: expect.stringMatching(/failed/) });
  });

  it('a hostile path or value stays data: asked for, compared, never run', async () => {
    const marker = join(tmpdir(), `blytz-probe-${process.pid}`);
    const path = `/x';require('fs').writeFileSync('${marker}','');'`;
    expect((await probe(path, { "'$(touch /tmp/pwned)": true })).code).toBe(1);
    expect(seen.at(-1)?.url).toBe(encodeURI(path).replace(/%27/g, "'"));
    await expect(stat(marker)).rejects.toThrow();
  });
});

describe('the seed (init container): links the rendered files, merges the owned fields of openclaw.json', () => {
  let root: string;

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'blytz-seed-'));
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  /** A pod's two volumes: the rendered Secret (read by key) and the workspace PVC. */
  async function volumes(name: string, owned: JsonObject): Promise<{ workspace: string; rendered: string }> {
    const rendered = join(root, name, 'rendered');
    const workspace = join(root, name, 'workspace');
    await mkdir(rendered, { recursive: true });
    await mkdir(workspace, { recursive: true });
    await writeFile(join(rendered, 'agents-key'), '# Agents\n');
    await writeFile(join(rendered, 'config-key'), JSON.stringify(owned));
    return { workspace, rendered };
  }

  const seed = (v: { workspace: string; rendered: string }) =>
    exec(
      seedCommand({
        ...v,
        links: [{ key: 'agents-key', path: 'workspace/AGENTS.md' }],
        config: { key: 'config-key', path: 'openclaw.json' },
      }),
    );

  it("keeps what OpenClaw wrote (its migrations, the paired owner), enforces the controller's fields, drops the ones it no longer sets", async () => {
    const owned = {
      gateway: { mode: 'local', port: 18789, auth: { mode: 'token', token: 'new-token' } },
      channels: { telegram: { enabled: true, botToken: '123:abc', dmPolicy: 'pairing' } },
    };
    const v = await volumes('merge', owned);
    const openclaws = {
      meta: { lastTouchedVersion: '2026.9.6' },
      gateway: { mode: 'local', port: 18789, auth: { mode: 'token', token: 'old-token' }, trustedProxies: ['10.0.0.0/8'] },
      channels: { telegram: { enabled: true, botToken: '123:abc', allowFrom: ['42'] } },
      agents: { defaults: { model: { primary: 'anthropic/claude-sonnet-4-6' } } },
    };
    await writeFile(join(v.workspace, 'openclaw.json'), JSON.stringify(openclaws));
    expect(await seed(v)).toEqual({ code: 0, stderr: '' });
    const merged = JSON.parse(await readFile(join(v.workspace, 'openclaw.json'), 'utf8')) as JsonObject;
    expect(merged).toEqual(applyOwnedConfig(openclaws, owned));
    expect(merged).toMatchObject({
      meta: { lastTouchedVersion: '2026.9.6' },
      gateway: { auth: { token: 'new-token' } },
      channels: { telegram: { allowFrom: ['42'], dmPolicy: 'pairing' } },
    });
    expect((merged['gateway'] as JsonObject)['trustedProxies']).toBeUndefined();
    expect(merged['agents']).toBeUndefined(); // only owned fields were there, and they are no longer set
    expect((await stat(join(v.workspace, 'openclaw.json'))).mode & 0o777).toBe(0o600);
    expect(await readlink(join(v.workspace, 'workspace', 'AGENTS.md'))).toBe(join(v.rendered, 'agents-key'));
    // Again, as the next pod's seed: nothing changes.
    const before = await readFile(join(v.workspace, 'openclaw.json'), 'utf8');
    expect(await seed(v)).toEqual({ code: 0, stderr: '' });
    expect(await readFile(join(v.workspace, 'openclaw.json'), 'utf8')).toBe(before);
  });

  it('replaces a link left by an older seed with a real file, and keeps an unreadable config beside the new one', async () => {
    const owned = { gateway: { mode: 'local' } };
    const linked = await volumes('link', owned);
    await symlink(join(linked.rendered, 'config-key'), join(linked.workspace, 'openclaw.json'));
    expect(await seed(linked)).toEqual({ code: 0, stderr: '' });
    expect((await lstat(join(linked.workspace, 'openclaw.json'))).isFile()).toBe(true);
    expect(JSON.parse(await readFile(join(linked.workspace, 'openclaw.json'), 'utf8'))).toEqual(owned);
    expect(await readFile(join(linked.rendered, 'config-key'), 'utf8')).toBe(JSON.stringify(owned));

    const torn = await volumes('torn', owned);
    await writeFile(join(torn.workspace, 'openclaw.json'), '{"gateway": {');
    expect(await seed(torn)).toEqual({ code: 0, stderr: '' });
    expect(JSON.parse(await readFile(join(torn.workspace, 'openclaw.json'), 'utf8'))).toEqual(owned);
    expect(await readFile(join(torn.workspace, 'openclaw.json.unreadable'), 'utf8')).toBe('{"gateway": {');
  });

  it('merges as FileWorkspaces merges (applyOwnedConfig), whatever both sides hold', async () => {
    const leaf = fc.oneof(fc.string({ maxLength: 4 }), fc.integer(), fc.boolean());
    const tree = fc.dictionary(
      fc.constantFrom('gateway', 'channels', 'agents', 'env', 'meta'),
      fc.oneof(
        leaf,
        fc.dictionary(
          fc.constantFrom('auth', 'telegram', 'defaults', 'vars', 'port', 'mode', 'token', 'enabled'),
          fc.oneof(
            leaf,
            fc.dictionary(fc.constantFrom('token', 'mode', 'botToken', 'enabled', 'workspace', 'ANTHROPIC_API_KEY'), leaf),
          ),
        ),
      ),
    );
    let n = 0;
    await fc.assert(
      fc.asyncProperty(tree, tree, async (current, owned) => {
        const v = await volumes(`prop-${n++}`, owned as JsonObject);
        await writeFile(join(v.workspace, 'openclaw.json'), JSON.stringify(current));
        const result = await seed(v);
        expect(result).toEqual({ code: 0, stderr: '' });
        expect(JSON.parse(await readFile(join(v.workspace, 'openclaw.json'), 'utf8'))).toEqual(
          applyOwnedConfig(current as JsonObject, owned as JsonObject),
        );
      }),
      { numRuns: 12 },
    );
  });
});
