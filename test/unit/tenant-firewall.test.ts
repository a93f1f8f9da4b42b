import { Writable } from 'node:stream';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import {
  chainRules,
  judgeTenantFirewall,
  tenantFirewallCheck,
  TenantFirewallWatch,
  type TenantFirewallStatus,
} from '../../src/runtime/docker/tenant-firewall.js';

/**
 * What `nft list table inet blytz_tenants` says about tenant isolation on a Docker host: loaded,
 * missing, loaded without the rules that matter, or unknown (nft absent, not permitted).
 */

/** The table as nft 1.0.6 lists it once deploy/host/blytz-tenants.nft is loaded (one port opened). */
const LISTING = `table inet blytz_tenants {
	set customer_host_tcp_ports {
		type inet_service
		elements = { 18080 }
	}

	chain forward {
		type filter hook forward priority filter - 10; policy accept;
		iifname "bz-*" oifname "bz-*" drop comment "customer to another customer"
		iifname "bz-*" oifname "docker0" drop comment "customer to Docker's default bridge"
		iifname "bz-*" oifname "br-*" drop comment "customer to another Docker network"
		iifname "bz-*" ip daddr 169.254.0.0/16 drop comment "customer to link-local (instance metadata)"
		iifname "bz-*" ip6 daddr fe80::/10 drop comment "customer to link-local"
	}

	chain input {
		type filter hook input priority filter - 10; policy accept;
		iifname != "bz-*" accept
		ct state established,related accept comment "replies to the host's own connections (probes, docker-proxy)"
		tcp dport @customer_host_tcp_ports accept
		drop comment "customer to the host itself"
	}
}
`;

/** Lines without which the table isolates nothing (each one's absence must be noticed). */
const ESSENTIAL = [
  'iifname "bz-*" oifname "bz-*" drop',
  'iifname "bz-*" oifname "docker0" drop',
  'iifname "bz-*" oifname "br-*" drop',
  'type filter hook forward',
  'type filter hook input',
  'drop comment "customer to the host itself"',
];

const ok = (stdout: string) => ({ exitCode: 0, stdout, stderr: '' });

describe('judging nft list table', () => {
  it('the loaded ruleset is loaded', () => {
    expect(judgeTenantFirewall(ok(LISTING))).toEqual({ state: 'loaded', message: expect.stringContaining('is loaded') });
  });

  it('reads rules by chain, comments left out', () => {
    const chains = chainRules(LISTING);
    expect([...chains.keys()]).toEqual(['forward', 'input']);
    expect(chains.get('input')?.at(-1)).toBe('drop');
    expect(chains.get('forward')?.[1]).toBe('iifname "bz-*" oifname "bz-*" drop');
  });

  it('a table without a rule that matters is incomplete, and says which', () => {
    const listing = LISTING.replace(/.*oifname "docker0" drop.*\n/, '');
    const status = judgeTenantFirewall(ok(listing));
    expect(status.state).toBe('incomplete');
    expect(status.message).toContain('forward: iifname "bz-*" oifname "docker0" drop');
    expect(status.message).toContain('nft -f deploy/host/blytz-tenants.nft');
  });

  it('property: removing any non-empty set of essential lines is never "loaded"', () => {
    fc.assert(
      fc.property(fc.subarray(ESSENTIAL, { minLength: 1 }), (removed) => {
        const lines = LISTING.split('\n').filter((line) => !removed.some((r) => line.trim().startsWith(r)));
        expect(judgeTenantFirewall(ok(lines.join('\n'))).state).toBe('incomplete');
      }),
    );
  });

  it('no such table is missing, with what to run', () => {
    const status = judgeTenantFirewall({
      exitCode: 1,
      stdout: '',
      stderr: 'Error: No such file or directory\nlist table inet blytz_tenants\n                ^^^^^^^^^^^^^\n',
    });
    expect(status.state).toBe('missing');
    expect(status.message).toMatch(/not loaded: customer containers can reach each other/);
    expect(status.message).toContain('nft -f deploy/host/blytz-tenants.nft');
  });

  it('not permitted, nft not installed, a timeout or another error is unknown, said as such', () => {
    const notPermitted = judgeTenantFirewall({
      exitCode: 1,
      stdout: '',
      stderr:
        'Operation not permitted (you must be root)\nnetlink: Error: cache initialization failed: Operation not permitted\n',
    });
    expect(notPermitted).toEqual({ state: 'unknown', message: expect.stringMatching(/^unknown: not permitted .*CAP_NET_ADMIN/) });
    const absent = judgeTenantFirewall({ errorCode: 'ENOENT', exitCode: null, stdout: '', stderr: '' });
    expect(absent).toEqual({ state: 'unknown', message: expect.stringMatching(/^unknown: nft is not installed here/) });
    expect(judgeTenantFirewall({ errorCode: 'ETIMEDOUT', exitCode: null, stdout: '', stderr: '' }).state).toBe('unknown');
    const other = judgeTenantFirewall({ exitCode: 1, stdout: '', stderr: 'Error: something odd\n' });
    expect(other).toEqual({ state: 'unknown', message: expect.stringContaining('something odd') });
  });

  it('maps to a doctor line: ok, fail, unknown', () => {
    expect(tenantFirewallCheck({ state: 'loaded', message: 'm' }).status).toBe('ok');
    expect(tenantFirewallCheck({ state: 'missing', message: 'm' }).status).toBe('fail');
    expect(tenantFirewallCheck({ state: 'incomplete', message: 'm' }).status).toBe('fail');
    expect(tenantFirewallCheck({ state: 'unknown', message: 'm' })).toEqual({
      name: 'tenant-firewall',
      status: 'unknown',
      message: 'm',
    });
  });
});

describe('the watch blytz serve keeps', () => {
  it('sets the metric to the state found and logs once per change: an error while isolation is off', async () => {
    const lines: Array<{ level: number; msg: string; tenantFirewall?: string }> = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        lines.push(JSON.parse(chunk.toString()) as { level: number; msg: string });
        callback();
      },
    });
    const metrics = new Metrics();
    const answers: TenantFirewallStatus[] = [
      { state: 'missing', message: 'not loaded' },
      { state: 'missing', message: 'not loaded' },
      { state: 'loaded', message: 'is loaded' },
      { state: 'unknown', message: 'unknown: nft is not installed here' },
    ];
    const watch = new TenantFirewallWatch({
      read: async () => answers.shift() as TenantFirewallStatus,
      logger: createLogger({ level: 'info', destination }),
      metrics,
    });
    const gauge = async () =>
      Object.fromEntries((await metrics.tenantFirewall.get()).values.map((v) => [v.labels['state'], v.value]));

    await watch.check();
    expect(await gauge()).toEqual({ loaded: 0, missing: 1, incomplete: 0, unknown: 0 });
    await watch.check();
    await watch.check();
    expect(await gauge()).toEqual({ loaded: 1, missing: 0, incomplete: 0, unknown: 0 });
    await watch.check();
    expect(await gauge()).toEqual({ loaded: 0, missing: 0, incomplete: 0, unknown: 1 });
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      [50, 'TENANT ISOLATION IS OFF: not loaded'],
      [30, 'is loaded'],
      [40, 'tenant isolation cannot be checked: unknown: nft is not installed here'],
    ]);
    expect(watch.last?.state).toBe('unknown');
  });
});
