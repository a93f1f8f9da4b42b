import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { duration, FailureLog } from '../../src/observability/failure-log.js';
import { createLogger } from '../../src/observability/logger.js';
import { CircuitOpenError, DependencyError, dependencyOf } from '../../src/resilience/guard.js';

interface Line {
  level: number;
  msg: string;
  [key: string]: unknown;
}

/** A FailureLog on a JSON logger writing into memory, with a clock the test moves. */
function setUp() {
  const lines: Line[] = [];
  const destination = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Line);
      callback();
    },
  });
  let now = 1_000_000;
  const log = new FailureLog(createLogger({ level: 'debug', destination }), { now: () => now });
  return { log, lines, advance: (ms: number) => (now += ms) };
}

const refused = () =>
  new DependencyError('caddy', 'getServer', 'fetch failed: connect ECONNREFUSED 127.0.0.1:2019', {
    cause: new Error('connect ECONNREFUSED'),
  });

describe('FailureLog', () => {
  it('writes one line for the first failure, with the message and no stack trace', () => {
    const { log, lines } = setUp();
    log.failure('caddy', 'route sweep failed', refused());
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({
      level: 40,
      dependency: 'caddy',
      msg: 'route sweep failed: caddy getServer: fetch failed: connect ECONNREFUSED 127.0.0.1:2019',
    });
    expect(JSON.stringify(lines[0])).not.toMatch(/stack|at .*\.ts/);
  });

  it('collapses a failure every second into lines at doubling intervals, each counting what it left out', () => {
    const { log, lines, advance } = setUp();
    // Five minutes of one failure per second, from two places (the sweep and the reconciles).
    for (let second = 0; second < 300; second++) {
      log.failure('caddy', second % 2 === 0 ? 'route sweep failed' : 'reconcile of alice failed; backing off', refused());
      advance(1000);
    }
    // First line, then one after 10 s, 20 s, 40 s, 80 s, 160 s (at 10, 30, 70, 150 s; 310 s is past the end).
    expect(lines.map((l) => l.msg.split(':')[0])).toEqual([
      'route sweep failed',
      'caddy still failing',
      'caddy still failing',
      'caddy still failing',
      'caddy still failing',
    ]);
    expect(lines[1]?.msg).toMatch(
      /^caddy still failing: 10 more failures in 10s \(latest: route sweep failed: caddy getServer: .*\); next report in 20s unless it recovers$/,
    );
    expect(lines[2]?.msg).toMatch(/^caddy still failing: 20 more failures in 20s .*next report in 40s/);
    expect(lines[3]?.msg).toMatch(/^caddy still failing: 40 more failures in 40s .*next report in 1m20s/);
    expect(lines[4]?.msg).toMatch(/^caddy still failing: 80 more failures in 1m20s .*next report in 2m40s/);
    expect(lines[4]).toMatchObject({ level: 40, dependency: 'caddy', failures: 151, failingForMs: 150_000 });
  });

  it('caps the interval at five minutes', () => {
    const { log, lines, advance } = setUp();
    log.failure('docker', 'x', new Error('down'));
    for (let i = 0; i < 12; i++) {
      advance(300_000);
      log.failure('docker', 'x', new Error('down'));
    }
    // Every call is at least the (capped) window after the last line: each one writes.
    expect(lines).toHaveLength(13);
    expect(lines.at(-1)?.msg).toMatch(/next report in 5m unless it recovers$/);
  });

  it('ends a streak with one info line on the first success, and starts afresh after it', () => {
    const { log, lines, advance } = setUp();
    log.success('caddy'); // nothing failed: nothing to say
    expect(lines).toEqual([]);
    log.failure('caddy', 'route sweep failed', refused());
    advance(4000);
    log.failure('caddy', 'route sweep failed', refused());
    advance(3500);
    log.success('caddy');
    log.success('caddy');
    expect(lines.map((l) => [l.level, l.msg])).toEqual([
      [40, expect.stringMatching(/^route sweep failed: /)],
      [30, 'caddy answers again after 2 failures over 8s'],
    ]);
    expect(log.failing('caddy')).toBe(false);
    log.failure('caddy', 'route sweep failed', refused());
    expect(lines).toHaveLength(3);
    expect(lines[2]?.msg).toMatch(/^route sweep failed: /);
  });

  it('keeps one streak per dependency', () => {
    const { log, lines, advance } = setUp();
    log.failure('caddy', 'route sweep failed', refused());
    log.failure('docker', 'reconcile of bob failed; backing off', new DependencyError('docker', 'list', 'socket hang up'));
    advance(1000);
    log.failure('caddy', 'route sweep failed', refused());
    log.success('docker');
    expect(lines.map((l) => l.dependency)).toEqual(['caddy', 'docker', 'docker']);
    expect(log.failing('caddy')).toBe(true);
  });
});

describe('dependencyOf', () => {
  it('finds the dependency on the error or along its causes, and nothing elsewhere', () => {
    expect(dependencyOf(refused())).toBe('caddy');
    expect(dependencyOf(new CircuitOpenError('docker', 'list'))).toBe('docker');
    expect(dependencyOf(new Error('step failed', { cause: new Error('x', { cause: refused() }) }))).toBe('caddy');
    expect(dependencyOf(new Error('a bug'))).toBeUndefined();
    expect(dependencyOf('a string')).toBeUndefined();
  });
});

describe('duration', () => {
  it('is short and exact enough for a log line', () => {
    expect([850, 12_000, 60_000, 200_000, 3_600_000, 7_500_000].map(duration)).toEqual([
      '850ms',
      '12s',
      '1m',
      '3m20s',
      '1h',
      '2h5m',
    ]);
  });
});
