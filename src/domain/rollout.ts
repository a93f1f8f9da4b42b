/**
 * Fleet rollout records: what the store keeps about a rollout and each customer taking part, and
 * the rollout object the admin API shows (`blytz rollout status`). The rules that move them are
 * in controller/rollout/ (`gate.ts` pure, `rollouts.ts` with the store).
 */

export type EntryTarget = 'new' | 'previous';
export type EntryState = 'waiting' | 'updating' | 'rollingBack' | 'done' | 'failed';
export type RolloutState = 'running' | 'paused' | 'superseded';

export interface RolloutRecord {
  id: number;
  /** `<template>/<plan>`. */
  key: string;
  fingerprint: string;
  image: string;
  state: RolloutState;
  undone: boolean;
  pausedReason: string | null;
  pausedMessage: string | null;
  /** null: not checked yet (a new or resumed rollout checks once). */
  imagePresent: boolean | null;
  startedAtMs: number;
}

export interface RolloutEntry {
  rolloutId: number;
  customer: string;
  fromHash: string | null;
  toHash: string;
  prevImage: string | null;
  target: EntryTarget;
  state: EntryState;
  startedAtMs: number | null;
  finishedAtMs: number | null;
  message: string;
}

export interface RolloutCounts {
  total: number;
  waiting: number;
  inProgress: number;
  done: number;
  failed: number;
  rolledBack: number;
}

/** A rollout as the admin API shows it. */
export interface RolloutView {
  id: number;
  key: string;
  target: { fingerprint: string; image: string };
  state: 'running' | 'paused' | 'complete';
  undone: boolean;
  pausedReason: string | null;
  pausedMessage: string | null;
  startedAt: string;
  counts: RolloutCounts;
  maxUnavailable: string;
  slots: number;
  etaSeconds: number | null;
  customers: Array<Pick<RolloutEntry, 'customer' | 'state' | 'target' | 'message'> & { prevImage: string | null }>;
}
