import { describe, expect, it } from 'vitest';
import { PostgresLeaderElector, advisoryLockKey } from '../../src/store/leader-elector.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';
import type { DatabaseHandle } from '../../src/store/database.js';

describe('PostgresLeaderElector on the embedded database', () => {
  it('always leads, without a dedicated connection, and reports it', async () => {
    // PGlite runs inside this one process: there is nobody to compete with.
    const handle = { kind: 'pglite' } as DatabaseHandle;
    const metrics = new Metrics({ defaultMetrics: false });
    const elector = new PostgresLeaderElector({ name: 'embedded', handle, logger: createLogger({ level: 'silent' }), metrics });
    const changes: boolean[] = [];
    elector.onChange((leading) => changes.push(leading));
    await elector.start();
    await elector.start();
    expect(elector.isLeader()).toBe(true);
    const gauge = async (): Promise<number | undefined> =>
      (await metrics.registry.getMetricsAsJSON()).find((m) => m.name === 'leader_election_master_status')?.values[0]?.value;
    expect(await gauge()).toBe(1);
    await elector.stop();
    expect(elector.isLeader()).toBe(false);
    expect(await gauge()).toBe(0);
    expect(changes).toEqual([true, false]);
  });

  it('derives a stable signed 64-bit lock key per name', () => {
    const key = BigInt(advisoryLockKey('blytz-controller'));
    expect(key).toBe(BigInt(advisoryLockKey('blytz-controller')));
    expect(key).not.toBe(BigInt(advisoryLockKey('other')));
    expect(key >= -(2n ** 63n) && key < 2n ** 63n).toBe(true);
  });
});
