import { describe, expect, it } from 'vitest';
import { containerConfig } from '../../src/runtime/docker/container-config.js';
import { mapLimit, parseStatus } from '../../src/runtime/docker/health.js';
import { checkExtraLabels, labelFilter } from '../../src/domain/labels.js';
import type { ContainerSpec } from '../../src/runtime/runtime.js';
import { stubHealth } from '../support/fixtures.js';

const spec: ContainerSpec = {
  customer: 'alice',
  image: 'img:1',
  containerPort: 18789,
  hostPort: 30001,
  user: '1000:1000',
  mounts: [{ hostPath: '/data/customers/alice', containerPath: '/home/node/.openclaw', readOnly: false }],
  env: { TZ: 'UTC' },
  resources: { memoryBytes: 1024, nanoCpus: 5, pidsLimit: 7, nodeHeapMiB: 64 },
  ...stubHealth(),
  specHash: 'abc',
};

describe('parseStatus', () => {
  it('reads Docker health and the first minute of uptime', () => {
    expect(parseStatus('Up Less than a second')).toEqual({ upSeconds: 0 });
    expect(parseStatus('Up 1 second')).toEqual({ upSeconds: 1 });
    expect(parseStatus('Up 12 seconds (health: starting)')).toEqual({ upSeconds: 12, dockerHealth: 'starting' });
    expect(parseStatus('Up About a minute (healthy)')).toEqual({ upSeconds: 60, dockerHealth: 'healthy' });
    expect(parseStatus('Up 3 minutes (unhealthy)')).toEqual({ upSeconds: 180, dockerHealth: 'unhealthy' });
    expect(parseStatus('Up 2 hours')).toEqual({});
    expect(parseStatus('Exited (137) 5 seconds ago')).toEqual({});
  });
});

describe('mapLimit', () => {
  it('keeps order and never runs more than the limit at once', async () => {
    let running = 0;
    let peak = 0;
    const out = await mapLimit([1, 2, 3, 4, 5, 6, 7], 3, async (n) => {
      running += 1;
      peak = Math.max(peak, running);
      await new Promise((r) => setImmediate(r));
      running -= 1;
      return n * 10;
    });
    expect(out).toEqual([10, 20, 30, 40, 50, 60, 70]);
    expect(peak).toBe(3);
    expect(await mapLimit([], 3, async () => 1)).toEqual([]);
  });
});

describe('containerConfig', () => {
  it('names, labels and hardens the container; publishes on 127.0.0.1 only', () => {
    const config = containerConfig(spec, { 'cloud.blytz.instance': 'x' });
    expect(config.name).toBe('blytz-alice');
    expect(config.Env).toEqual(['TZ=UTC']);
    expect(config.Labels).toMatchObject({
      'cloud.blytz.managed-by': 'blytz',
      'cloud.blytz.customer': 'alice',
      'cloud.blytz.spec-hash': 'abc',
      'cloud.blytz.instance': 'x',
    });
    expect(config.HostConfig).toMatchObject({
      PortBindings: { '18789/tcp': [{ HostIp: '127.0.0.1', HostPort: '30001' }] },
      Memory: 1024,
      NanoCpus: 5,
      PidsLimit: 7,
      CapDrop: ['ALL'],
      SecurityOpt: ['no-new-privileges:true'],
      RestartPolicy: { Name: 'unless-stopped' },
    });
  });

  it('refuses root, bad names, bad ports and relative health paths', () => {
    for (const user of ['0', '0:0', 'root', '', 'node']) expect(() => containerConfig({ ...spec, user }, {})).toThrow(/non-root/);
    for (const customer of ['../x', 'A', '-a', 'a'.repeat(64)])
      expect(() => containerConfig({ ...spec, customer }, {})).toThrow(/DNS-1123/);
    expect(() => containerConfig({ ...spec, hostPort: 0 }, {})).toThrow(/port/);
    expect(() =>
      containerConfig({ ...spec, probes: { ...spec.probes, readiness: { path: 'readyz', expect: { ready: true } } } }, {}),
    ).toThrow(/probe path/);
    expect(() => containerConfig({ ...spec, tmpfs: ['/tmp,exec'] }, {})).toThrow(/tmpfs path/);
  });
});

describe('extra labels', () => {
  it('cannot replace our own marks, and narrow the filter', () => {
    expect(() => checkExtraLabels({ 'cloud.blytz.customer': 'x' })).toThrow(/own labels/);
    expect(labelFilter({ 'cloud.blytz.instance': 'i' }, { 'cloud.blytz.customer': 'c' })).toEqual([
      'cloud.blytz.managed-by=blytz',
      'cloud.blytz.instance=i',
      'cloud.blytz.customer=c',
    ]);
  });
});
