import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { containerConfig } from '../../src/runtime/docker/container-config.js';
import { stubHealth } from '../support/fixtures.js';
import {
  bridgeName,
  CUSTOMER_PREFIX_LENGTH,
  customerNetworkName,
  formatCidr,
  hostRoutes,
  overlaps,
  parseCidr,
  poolSlots,
  subnetCandidates,
} from '../../src/runtime/docker/networks.js';

describe('customer networks: names', () => {
  it("names the network like the container and the bridge bz-<12 hex>, within Linux's 15 characters", () => {
    expect(customerNetworkName('alice-example-com')).toBe('blytz-alice-example-com');
    fc.assert(
      fc.property(
        fc.stringMatching(/^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/),
        fc.string({ maxLength: 32 }),
        (customer, instance) => {
          const bridge = bridgeName(customer, instance);
          expect(bridge).toMatch(/^bz-[0-9a-f]{12}$/);
          expect(bridge.length).toBeLessThanOrEqual(15);
        },
      ),
    );
    expect(bridgeName('a', 'one')).not.toBe(bridgeName('a', 'two'));
  });

  it("puts a container on its customer's network when given one", () => {
    const spec = {
      customer: 'alice',
      image: 'img',
      containerPort: 18789,
      hostPort: 30001,
      user: '1000:1000',
      mounts: [],
      env: {},
      resources: { memoryBytes: 1, nanoCpus: 1, pidsLimit: 1, nodeHeapMiB: 1 },
      ...stubHealth(),
      specHash: 'h',
    };
    expect(containerConfig(spec, {}, undefined, 'blytz-alice').HostConfig?.NetworkMode).toBe('blytz-alice');
    expect(containerConfig(spec, {}).HostConfig?.NetworkMode).toBeUndefined();
  });
});

describe('customer networks: addresses', () => {
  it('parses and formats IPv4 ranges, refusing host bits and non-ranges', () => {
    expect(formatCidr(parseCidr('10.199.0.0/16'))).toBe('10.199.0.0/16');
    expect(() => parseCidr('10.199.0.1/16')).toThrow(/host bits set: the network is 10.199.0.0\/16/);
    expect(() => parseCidr('10.199.0.0')).toThrow(/not an IPv4 CIDR/);
    expect(() => parseCidr('300.1.1.0/24')).toThrow(/not an IPv4 CIDR/);
    expect(poolSlots(parseCidr('10.199.0.0/16'))).toBe(4096);
    expect(poolSlots(parseCidr('10.199.0.0/29'))).toBe(0);
  });

  const pools = fc
    .integer({ min: 16, max: CUSTOMER_PREFIX_LENGTH })
    .chain((prefix) => fc.integer({ min: 0, max: 2 ** prefix - 1 }).map((n) => ({ base: n * 2 ** (32 - prefix), prefix })));

  it('tries every /28 of the pool exactly once, each inside the pool and none overlapping another (property)', () => {
    fc.assert(
      fc.property(pools, fc.string(), (pool, customer) => {
        const subnets = [...subnetCandidates(pool, customer)];
        expect(subnets).toHaveLength(poolSlots(pool));
        expect(new Set(subnets.map((s) => s.base)).size).toBe(subnets.length);
        for (const s of subnets) {
          expect(s.prefix).toBe(CUSTOMER_PREFIX_LENGTH);
          expect(s.base % 16).toBe(0);
          expect(overlaps(s, pool)).toBe(true);
          expect(s.base).toBeGreaterThanOrEqual(pool.base);
          expect(s.base + 16).toBeLessThanOrEqual(pool.base + 2 ** (32 - pool.prefix));
        }
      }),
      { numRuns: 50 },
    );
  });

  it('starts from the same subnet for the same name, spreading names over the pool', () => {
    const pool = parseCidr('10.199.0.0/16');
    const first = (name: string) => formatCidr(subnetCandidates(pool, name).next().value!);
    expect(first('alice')).toBe(first('alice'));
    const starts = new Set(Array.from({ length: 200 }, (_, i) => first(`customer-${i}`)));
    expect(starts.size).toBeGreaterThan(190);
  });

  it('tells overlapping ranges apart (property: overlap is symmetric and matches address arithmetic)', () => {
    const cidr = fc
      .integer({ min: 8, max: 32 })
      .chain((prefix) =>
        fc
          .integer({ min: 0, max: 2 ** Math.min(prefix, 31) - 1 })
          .map((n) => ({ base: (n % 2 ** prefix) * 2 ** (32 - prefix), prefix })),
      );
    fc.assert(
      fc.property(cidr, cidr, (a, b) => {
        const contains = (c: typeof a, ip: number) => ip >= c.base && ip < c.base + 2 ** (32 - c.prefix);
        const expected = contains(a, b.base) || contains(b, a.base);
        expect(overlaps(a, b)).toBe(expected);
        expect(overlaps(b, a)).toBe(expected);
      }),
    );
  });

  it("reads the host's routes (another engine's bridges) from /proc/net/route, skipping the default route", async () => {
    const dir = mkdtempSync(join(tmpdir(), 'blytz-routes-'));
    try {
      const file = join(dir, 'route');
      writeFileSync(
        file,
        [
          'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT',
          'eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0',
          'docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0',
          'bz-1\t00FAC70A\t00000000\t0001\t0\t0\t0\tF0FFFFFF\t0\t0\t0',
        ].join('\n'),
      );
      expect((await hostRoutes(file)).map(formatCidr)).toEqual(['172.17.0.0/16', '10.199.250.0/28']);
      expect(await hostRoutes(join(dir, 'missing'))).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
