import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AdminClient } from '../../src/cli/client.js';
import { runDoctor } from '../../src/cli/doctor.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import { readTenantFirewall, TENANT_TABLE, TenantFirewallWatch } from '../../src/runtime/docker/tenant-firewall.js';

/**
 * The tenant firewall check against the real nft on this machine (the tests run as root). The
 * host's own table (loaded by scripts/services.sh, other tests rely on it) is only read. Loading,
 * breaking and removing the table happens in a network namespace of this test's own, where it
 * filters nothing anyone else uses.
 */

const run = promisify(execFile);
const RULESET = fileURLToPath(new URL('../../deploy/host/blytz-tenants.nft', import.meta.url));
const namespace = `blytz-fw-${randomBytes(4).toString('hex')}`;
/** nft inside the test's namespace. */
const nftHere = ['ip', 'netns', 'exec', namespace, 'nft'];

async function nftInNamespace(...args: string[]): Promise<void> {
  await run('ip', ['netns', 'exec', namespace, 'nft', ...args]);
}

beforeAll(async () => {
  await run('ip', ['netns', 'add', namespace]);
});

afterAll(async () => {
  await run('ip', ['netns', 'delete', namespace]);
});

describe('reading the tenant firewall with the real nft', () => {
  it("this host's table, as scripts/services.sh loaded it, reads as loaded", async () => {
    expect(await readTenantFirewall()).toEqual({ state: 'loaded', message: expect.stringContaining(`inet ${TENANT_TABLE}`) });
  });

  it('missing, then loaded from deploy/host/blytz-tenants.nft, then incomplete once a rule is deleted', async () => {
    expect((await readTenantFirewall({ command: nftHere })).state).toBe('missing');

    await nftInNamespace('-f', RULESET);
    expect((await readTenantFirewall({ command: nftHere })).state).toBe('loaded');

    // Someone deletes the rule keeping customers apart.
    const { stdout } = await run('ip', [
      'netns',
      'exec',
      namespace,
      'nft',
      '-a',
      'list',
      'chain',
      'inet',
      TENANT_TABLE,
      'forward',
    ]);
    const handle = /oifname "bz-\*" drop .*# handle (\d+)/.exec(stdout)?.[1];
    expect(handle).toBeDefined();
    await nftInNamespace('delete', 'rule', 'inet', TENANT_TABLE, 'forward', 'handle', handle as string);
    const broken = await readTenantFirewall({ command: nftHere });
    expect(broken.state).toBe('incomplete');
    expect(broken.message).toContain('iifname "bz-*" oifname "bz-*" drop');

    await nftInNamespace('delete', 'table', 'inet', TENANT_TABLE);
    expect((await readTenantFirewall({ command: nftHere })).state).toBe('missing');
  });

  it('unknown when nft may not read the ruleset (not root) or is not installed', async () => {
    const asNobody = await readTenantFirewall({
      command: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', 'nft'],
    });
    expect(asNobody).toEqual({ state: 'unknown', message: expect.stringMatching(/^unknown: not permitted/) });
    const absent = await readTenantFirewall({ command: ['/nonexistent/nft'] });
    expect(absent).toEqual({ state: 'unknown', message: expect.stringMatching(/^unknown: nft is not installed here/) });
  });

  it('the watch blytz serve runs logs an error and sets the metric when the table is missing', async () => {
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        lines.push(chunk.toString());
        callback();
      },
    });
    const metrics = new Metrics();
    const watch = new TenantFirewallWatch({
      read: () => readTenantFirewall({ command: nftHere }),
      logger: createLogger({ level: 'info', destination }),
      metrics,
    });
    await watch.check();
    expect(lines.join('')).toContain('TENANT ISOLATION IS OFF');
    expect(await metrics.registry.metrics()).toContain('blytz_tenant_firewall{state="missing"} 1');

    await nftInNamespace('-f', RULESET);
    try {
      await watch.check();
      expect(await metrics.registry.metrics()).toContain('blytz_tenant_firewall{state="loaded"} 1');
    } finally {
      await nftInNamespace('delete', 'table', 'inet', TENANT_TABLE);
    }
  });

  it('blytz doctor, run as root on the host, reads it itself when the server could not (the kits run it without CAP_NET_ADMIN)', async () => {
    const fromServer =
      'unknown: not permitted to read nftables (needs root or CAP_NET_ADMIN); check as root: nft list table inet blytz_tenants';
    const client = {
      server: 'http://127.0.0.1:1',
      readyz: async () => ({ status: 'ok', checks: { database: { status: 'ok' as const } } }),
      diagnostics: async () => [{ name: 'tenant-firewall', status: 'unknown' as const, message: fromServer }],
    } as unknown as AdminClient;
    const line = (await runDoctor(client, {})).find((l) => l.name === 'tenant-firewall');
    expect(line?.status).toBe('ok');
    expect(line?.message).toContain('is loaded');
    expect(line?.message).toContain(`(checked from this machine); the server could not read it: ${fromServer}`);
  });
});
