import { describe, expect, it } from 'vitest';
import {
  countEntries,
  decide,
  estimateRemainingMs,
  maxUnavailableOf,
  needsNewRollout,
  parseMaxUnavailable,
  settle,
} from '../../src/controller/rollout/gate.js';
import type { RolloutEntry, RolloutRecord } from '../../src/domain/rollout.js';
import { loadConfig } from '../../src/config.js';

const rollout = (overrides: Partial<RolloutRecord> = {}): RolloutRecord => ({
  id: 1,
  key: 'personal-assistant/personal',
  fingerprint: 'fp-b',
  image: 'img:b',
  state: 'running',
  undone: false,
  pausedReason: null,
  pausedMessage: null,
  imagePresent: true,
  startedAtMs: 0,
  ...overrides,
});

const entry = (overrides: Partial<RolloutEntry> = {}): RolloutEntry => ({
  rolloutId: 1,
  customer: 'alice',
  fromHash: 'h-a',
  toHash: 'h-b',
  prevImage: 'img:a',
  target: 'new',
  state: 'waiting',
  startedAtMs: null,
  finishedAtMs: null,
  message: '',
  ...overrides,
});

describe('max unavailable', () => {
  it('parses a count or a percentage; rounds down; never below one', () => {
    expect(parseMaxUnavailable('3')).toEqual({ kind: 'count', value: 3 });
    expect(parseMaxUnavailable('10%')).toEqual({ kind: 'percent', value: 10 });
    expect(maxUnavailableOf(parseMaxUnavailable('10%'), 20)).toBe(2);
    expect(maxUnavailableOf(parseMaxUnavailable('10%'), 29)).toBe(2);
    expect(maxUnavailableOf(parseMaxUnavailable('10%'), 5)).toBe(1);
    expect(maxUnavailableOf(parseMaxUnavailable('10%'), 0)).toBe(1);
    expect(maxUnavailableOf(parseMaxUnavailable('100%'), 7)).toBe(7);
    expect(maxUnavailableOf(parseMaxUnavailable('4'), 2)).toBe(4);
    for (const bad of ['0', '0%', '101%', 'ten', '-1', '']) expect(() => parseMaxUnavailable(bad), bad).toThrow();
  });

  it('is configuration with defaults 10% and 2 failures; bad values name the variable', () => {
    const config = loadConfig({});
    expect(config.BLYTZ_ROLLOUT_MAX_UNAVAILABLE).toBe('10%');
    expect(config.BLYTZ_ROLLOUT_MAX_FAILURES).toBe(2);
    expect(config.BLYTZ_ROLLOUT_START_TIMEOUT_SECONDS).toBeUndefined();
    expect(loadConfig({ BLYTZ_ROLLOUT_MAX_UNAVAILABLE: '3' }).BLYTZ_ROLLOUT_MAX_UNAVAILABLE).toBe('3');
    expect(() => loadConfig({ BLYTZ_ROLLOUT_MAX_UNAVAILABLE: '0' })).toThrow(/BLYTZ_ROLLOUT_MAX_UNAVAILABLE/);
    expect(() => loadConfig({ BLYTZ_ROLLOUT_MAX_UNAVAILABLE: '150%' })).toThrow(/BLYTZ_ROLLOUT_MAX_UNAVAILABLE/);
    expect(() => loadConfig({ BLYTZ_ROLLOUT_MAX_FAILURES: '-1' })).toThrow(/BLYTZ_ROLLOUT_MAX_FAILURES/);
  });
});

describe('which rollout a fleet change belongs to', () => {
  it('starts one when there is none, the fleet inputs changed, or the entry aims elsewhere', () => {
    expect(needsNewRollout(undefined, undefined, 'fp-b', 'h-b')).toBe(true);
    expect(needsNewRollout(rollout(), undefined, 'fp-b', 'h-b')).toBe(false); // joins
    expect(needsNewRollout(rollout(), entry(), 'fp-b', 'h-b')).toBe(false);
    expect(needsNewRollout(rollout(), entry(), 'fp-c', 'h-c')).toBe(true); // another image
    expect(needsNewRollout(rollout(), entry(), 'fp-b', 'h-c')).toBe(true); // a render change, same inputs
    expect(needsNewRollout(rollout({ state: 'superseded' }), undefined, 'fp-b', 'h-b')).toBe(true);
  });
});

describe('decide: may this customer be recreated now', () => {
  it('a waiting customer asks for a slot in a running rollout and is held meanwhile', () => {
    expect(decide(rollout(), entry())).toMatchObject({
      recreateAllowed: false,
      wantsSlot: true,
      condition: { reason: 'WaitingForRollout' },
    });
  });

  it('a paused or undone rollout holds waiting customers without asking for a slot', () => {
    const paused = decide(rollout({ state: 'paused', pausedReason: 'Failures', pausedMessage: '3 failed' }), entry());
    expect(paused).toMatchObject({ recreateAllowed: false, condition: { reason: 'RolloutPaused' } });
    expect(paused.wantsSlot).toBeFalsy();
    expect(paused.condition?.message).toContain('3 failed');
    expect(decide(rollout({ undone: true }), entry())).toMatchObject({
      recreateAllowed: false,
      condition: { reason: 'RolloutUndone' },
    });
  });

  it('an updating or done customer goes on; a paused rollout does not stop one in flight', () => {
    expect(decide(rollout(), entry({ state: 'updating' }))).toEqual({ recreateAllowed: true });
    expect(decide(rollout({ state: 'paused' }), entry({ state: 'updating' }))).toEqual({ recreateAllowed: true });
    expect(decide(rollout(), entry({ state: 'done' }))).toEqual({ recreateAllowed: true });
  });

  it('a failed customer goes back to its previous image at once, without a slot', () => {
    for (const state of ['rollingBack', 'failed'] as const) {
      const d = decide(rollout({ state: 'paused' }), entry({ state, target: 'previous', message: 'not healthy' }));
      expect(d).toMatchObject({ recreateAllowed: true, rollbackImage: 'img:a' });
      expect(d.wantsSlot).toBeFalsy();
    }
  });

  it('an undone customer waits for a slot to go back, then stays back', () => {
    expect(decide(rollout({ undone: true }), entry({ target: 'previous' }))).toMatchObject({
      recreateAllowed: false,
      rollbackImage: 'img:a',
      wantsSlot: true,
    });
    expect(decide(rollout({ undone: true }), entry({ target: 'previous', state: 'done' }))).toMatchObject({
      recreateAllowed: true,
      rollbackImage: 'img:a',
      condition: { reason: 'RolloutUndone' },
    });
  });

  it('a superseded rollout holds nobody back', () => {
    expect(decide(rollout({ state: 'superseded' }), entry())).toEqual({ recreateAllowed: true });
  });
});

describe('settle: after a reconcile', () => {
  const timeout = { startTimeoutMs: 10_000 };
  it('an updated customer serving on the new spec is done', () => {
    expect(settle(entry({ state: 'updating', startedAtMs: 0 }), { current: true, now: 5_000, ...timeout })).toMatchObject({
      kind: 'done',
      entry: { state: 'done', finishedAtMs: 5_000 },
    });
  });

  it('not healthy within the start timeout: failed, going back to the previous image', () => {
    const e = entry({ state: 'updating', startedAtMs: 0 });
    expect(settle(e, { current: false, now: 10_000, ...timeout })).toEqual({ kind: 'none' });
    const failed = settle(e, { current: false, now: 10_001, healthMessage: 'nothing answers', ...timeout });
    expect(failed).toMatchObject({ kind: 'failed', entry: { state: 'rollingBack', target: 'previous' } });
    expect(failed.kind === 'failed' && failed.entry.message).toMatch(/within 10s \(nothing answers\)/);
  });

  it('a rollback serving again counts as failed (rolled back); waiting customers are untouched', () => {
    expect(settle(entry({ state: 'rollingBack', target: 'previous' }), { current: true, now: 1, ...timeout })).toMatchObject({
      kind: 'rolledBack',
      entry: { state: 'failed' },
    });
    expect(settle(entry(), { current: false, now: 1e9, ...timeout })).toEqual({ kind: 'none' });
    expect(settle(entry({ state: 'failed', target: 'previous' }), { current: true, now: 1, ...timeout })).toEqual({
      kind: 'none',
    });
  });
});

describe('counts and ETA', () => {
  it('counts by state; estimates the waves still to go from finished updates', () => {
    const entries = [
      entry({ state: 'done', startedAtMs: 0, finishedAtMs: 4_000 }),
      entry({ state: 'done', startedAtMs: 0, finishedAtMs: 6_000 }),
      entry({ state: 'updating', startedAtMs: 0 }),
      entry(),
      entry(),
      entry({ state: 'failed', target: 'previous' }),
      entry({ state: 'done', target: 'previous' }),
    ];
    expect(countEntries(entries)).toEqual({ total: 7, waiting: 2, inProgress: 1, done: 2, failed: 1, rolledBack: 1 });
    expect(estimateRemainingMs(entries, 2)).toBe(10_000); // 3 left, 2 at a time: 2 waves of 5 s
    expect(estimateRemainingMs([entry()], 2)).toBeUndefined();
    expect(estimateRemainingMs([entry({ state: 'done' })], 2)).toBe(0);
  });
});
