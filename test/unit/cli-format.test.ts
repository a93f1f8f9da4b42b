import { describe, expect, it } from 'vitest';
import type { CustomerObject } from '../../src/cli/client.js';
import { describeCustomer, eventAge } from '../../src/cli/describe.js';
import { desiredView, liveView, renderView, unifiedDiff } from '../../src/cli/diff.js';
import { customerTable, formatAge, formatTable, poolTable } from '../../src/cli/format.js';
import { poolObject } from '../../src/domain/pool.js';
import { parseManifest } from '../../src/domain/customer.js';

const NOW = new Date('2030-01-10T12:00:00Z');
const ago = (ms: number) => new Date(NOW.getTime() - ms).toISOString();
const SECOND = 1000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

function customer(name: string, overrides: Partial<CustomerObject['status']> = {}, created = ago(5 * MINUTE)): CustomerObject {
  return {
    apiVersion: 'blytz.cloud/v1alpha1',
    kind: 'Customer',
    metadata: { name, labels: { cohort: 'beta' }, generation: 2, resourceVersion: '7', creationTimestamp: created },
    spec: {
      email: `${name}@example.com`,
      displayName: 'Ada',
      plan: 'personal',
      template: 'personal-assistant',
      state: 'active',
      instructions: 'Keep my calendar.\nSummarise email.',
      telegram: { botTokenSet: true },
      model: { apiKeySet: false },
      paused: false,
    },
    status: overrides,
  };
}

describe('formatAge', () => {
  it.each([
    [0, '0s'],
    [5 * SECOND, '5s'],
    [59 * SECOND + 999, '59s'],
    [60 * SECOND, '1m'],
    [5 * MINUTE + 30 * SECOND, '5m'],
    [59 * MINUTE, '59m'],
    [3 * HOUR, '3h'],
    [23 * HOUR + 59 * MINUTE, '23h'],
    [2 * DAY, '2d'],
    [364 * DAY, '364d'],
    [800 * DAY, '2y'],
    [-5 * SECOND, '0s'],
  ])('%d ms is %s', (ms, text) => {
    expect(formatAge(ms)).toBe(text);
  });
});

describe('formatTable', () => {
  it('aligns columns with three spaces and leaves no trailing spaces', () => {
    const text = formatTable(
      ['NAME', 'STATE', 'AGE'],
      [
        ['a', 'active', '5s'],
        ['much-longer-name', 'suspended', '3h'],
      ],
    );
    expect(text).toBe(
      ['NAME               STATE       AGE', 'a                  active      5s', 'much-longer-name   suspended   3h'].join('\n'),
    );
  });

  it('starts every column of every row at the same offset', () => {
    const text = customerTable(
      [customer('alice'), customer('bob-with-a-long-name', { phase: 'Ready', url: 'https://bob.blytz.localhost' })],
      NOW,
      true,
    );
    const lines = text.split('\n');
    const header = lines[0] as string;
    expect(header.split(/\s{3,}/)).toEqual([
      'NAME',
      'STATE',
      'PHASE',
      'READY',
      'URL',
      'AGE',
      'PLAN',
      'GENERATION',
      'OBSERVED',
      'PORT',
    ]);
    for (const column of ['STATE', 'PHASE', 'READY', 'URL', 'AGE', 'PLAN']) {
      const offset = header.indexOf(column);
      for (const line of lines.slice(1)) expect(line[offset - 1], `${column} in "${line}"`).toBe(' ');
      for (const line of lines.slice(1)) expect(line[offset], `${column} in "${line}"`).not.toBe(' ');
    }
  });
});

describe('customer table', () => {
  it('shows NAME, STATE, PHASE, READY, URL, AGE with <none> for what the controller has not set', () => {
    const ready = customer(
      'bob',
      {
        phase: 'Ready',
        url: 'https://bob.blytz.localhost',
        hostPort: 30001,
        observedGeneration: 2,
        conditions: [
          {
            type: 'Ready',
            status: 'True',
            reason: 'AllReady',
            message: '',
            lastTransitionTime: ago(MINUTE),
            observedGeneration: 2,
          },
        ],
      },
      ago(3 * DAY),
    );
    const lines = customerTable([customer('alice'), ready], NOW).split('\n');
    expect(lines.map((l) => l.split(/\s{3,}/))).toEqual([
      ['NAME', 'STATE', 'PHASE', 'READY', 'URL', 'AGE'],
      ['alice', 'active', '<none>', 'Unknown', '<none>', '5m'],
      ['bob', 'active', 'Ready', 'True', 'https://bob.blytz.localhost', '3d'],
    ]);
    expect(
      customerTable([ready], NOW, true)
        .split('\n')[1]
        ?.split(/\s{3,}/)
        .slice(6),
    ).toEqual(['personal', '2', '2', '30001']);
  });
});

describe('describe', () => {
  it('shows spec without secrets, status, conditions, billing and events with counts', () => {
    const c = customer('alice', {
      phase: 'Degraded',
      conditions: [
        {
          type: 'ContainerReady',
          status: 'False',
          reason: 'CrashLoop',
          message: 'exited 1',
          lastTransitionTime: ago(2 * MINUTE),
          observedGeneration: 2,
        },
      ],
      billing: { stripeCustomerId: 'cus_123' },
    });
    const text = describeCustomer(
      c,
      [
        {
          type: 'Warning',
          reason: 'ContainerFailed',
          message: 'exit 1',
          count: 4,
          firstTimestamp: ago(HOUR),
          lastTimestamp: ago(30 * SECOND),
        },
      ],
      NOW,
    );
    expect(text).toMatch(/^Name: +alice$/m);
    expect(text).toMatch(/^ {2}Telegram Bot Token: +set$/m);
    expect(text).toMatch(/^ {4}Summarise email\.$/m);
    expect(text).toMatch(/^ {2}Phase: +Degraded$/m);
    expect(text).toMatch(/^ {2}ContainerReady +False +CrashLoop +2m +exited 1$/m);
    expect(text).toMatch(/^ {2}Stripe Customer: +cus_123$/m);
    expect(text).toMatch(/^ {2}Stripe Subscription: +<none>$/m);
    expect(text).toMatch(/^ {2}Warning +ContainerFailed +30s \(x4 over 1h\) +exit 1$/m);
  });

  it('says <none> for no conditions and no events', () => {
    const text = describeCustomer(customer('alice'), [], NOW);
    expect(text).toMatch(/^Conditions: +<none>$/m);
    expect(text).toMatch(/^Events: +<none>$/m);
  });

  it('shows a single event without a count', () => {
    expect(eventAge({ count: 1, firstTimestamp: ago(DAY), lastTimestamp: ago(DAY) }, NOW)).toBe('1d');
  });
});

describe('diff', () => {
  const manifest = (spec: Record<string, unknown>) =>
    parseManifest({
      apiVersion: 'blytz.cloud/v1alpha1',
      kind: 'Customer',
      metadata: { name: 'alice', labels: { cohort: 'beta' } },
      spec: { email: 'alice@example.com', displayName: 'Ada', instructions: 'Keep my calendar.\nSummarise email.', ...spec },
    });

  it('finds no difference between a live customer and the manifest that made it (secrets as flags)', () => {
    const live = customer('alice');
    const desired = desiredView(manifest({ telegram: { botToken: `123456789:${'A'.repeat(35)}` } }), live);
    expect(unifiedDiff(renderView(liveView(live)), renderView(desired), 'live', 'file')).toBe('');
  });

  it('shows a changed field as a unified hunk', () => {
    const live = customer('alice');
    const text = unifiedDiff(
      renderView(liveView(live)),
      renderView(desiredView(manifest({ plan: 'pro' }), live)),
      'customer/alice (live)',
      'customer/alice (a.yaml, document 1)',
    );
    const lines = text.trimEnd().split('\n');
    expect(lines.slice(0, 2)).toEqual(['--- customer/alice (live)', '+++ customer/alice (a.yaml, document 1)']);
    expect(lines[2]).toMatch(/^@@ -\d+,\d+ \+\d+,\d+ @@$/);
    expect(lines.filter((l) => /^[-+] /.test(l))).toEqual(['-  plan: personal', '+  plan: pro']);
  });

  it('shows every line as added for a customer the server does not have', () => {
    const text = unifiedDiff([], ['a: 1', 'b: 2'], 'none', 'new');
    expect(text).toBe('--- none\n+++ new\n@@ -0,0 +1,2 @@\n+a: 1\n+b: 2\n');
  });

  it('numbers separate hunks from their own line positions', () => {
    const a = Array.from({ length: 20 }, (_, i) => `line ${i}`);
    const b = [...a];
    b[1] = 'changed 1';
    b[18] = 'changed 18';
    const hunks = unifiedDiff(a, b, 'a', 'b')
      .split('\n')
      .filter((l) => l.startsWith('@@'));
    expect(hunks).toEqual(['@@ -1,5 +1,5 @@', '@@ -16,5 +16,5 @@']);
  });
});

describe('pool table', () => {
  const pools = [
    poolObject({ plan: 'personal', size: 2, template: 'personal-assistant', generation: 4, status: { ready: 1, warming: 1, bound: 3, retiring: 0 } }),
    poolObject({ plan: 'pro', size: 0, template: 'personal-assistant', generation: 0, status: { ready: 0, warming: 0, bound: 0, retiring: 1 } }),
  ];

  it('shows each plan\'s size beside its slots by state', () => {
    expect(poolTable(pools).split('\n')).toEqual([
      'PLAN       DESIRED   READY   WARMING   BOUND',
      'personal   2         1       1         3',
      'pro        0         0       0         0',
    ]);
  });

  it('wide adds the slots being removed, the template and the generation', () => {
    const [header, personal] = poolTable(pools, true).split('\n');
    expect(header?.split(/\s+/)).toEqual(['PLAN', 'DESIRED', 'READY', 'WARMING', 'BOUND', 'RETIRING', 'TEMPLATE', 'GENERATION']);
    expect(personal?.split(/\s+/)).toEqual(['personal', '2', '1', '1', '3', '0', 'personal-assistant', '4']);
  });
});
