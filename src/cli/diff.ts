import { stringify } from 'yaml';
import type { CustomerManifest } from '../domain/customer.js';
import type { CustomerObject } from './client.js';

/**
 * `blytz diff`: what apply would change, computed client-side from the same normal form on
 * both sides (labels and the spec with defaults applied and secrets as "is set" flags). Secret
 * values are write-only, so a new value for an already set secret cannot be compared.
 */

export interface SpecView {
  metadata: { labels: Record<string, string> };
  spec: Record<string, unknown>;
}

export function liveView(live: CustomerObject): SpecView {
  const { spec } = live;
  return normalForm(live.metadata.labels ?? {}, {
    email: spec.email,
    displayName: spec.displayName,
    plan: spec.plan,
    template: spec.template,
    state: spec.state,
    paused: spec.paused,
    telegram: { botTokenSet: spec.telegram.botTokenSet, botTokenSecretRef: spec.telegram.botTokenSecretRef },
    model: { provider: spec.model.provider, apiKeySet: spec.model.apiKeySet, apiKeySecretRef: spec.model.apiKeySecretRef },
    instructions: spec.instructions,
  });
}

/** The object apply would store; secrets not given keep their stored value (the store's rule). */
export function desiredView(manifest: CustomerManifest, live: CustomerObject | undefined): SpecView {
  const { spec } = manifest;
  return normalForm(manifest.metadata.labels ?? {}, {
    email: spec.email,
    displayName: spec.displayName,
    plan: spec.plan,
    template: spec.template,
    state: spec.state,
    paused: spec.paused,
    telegram: {
      botTokenSet: spec.telegram?.botToken !== undefined || (live?.spec.telegram.botTokenSet ?? false),
      botTokenSecretRef: spec.telegram?.botTokenSecretRef,
    },
    model: {
      provider: spec.model?.provider,
      apiKeySet: spec.model?.apiKey !== undefined || (live?.spec.model.apiKeySet ?? false),
      apiKeySecretRef: spec.model?.apiKeySecretRef,
    },
    instructions: spec.instructions,
  });
}

/** Secrets given in the manifest that are already set on the server: changes we cannot see. */
export function uncomparableSecrets(manifest: CustomerManifest, live: CustomerObject | undefined): string[] {
  const fields: string[] = [];
  if (manifest.spec.telegram?.botToken !== undefined && live?.spec.telegram.botTokenSet) fields.push('spec.telegram.botToken');
  if (manifest.spec.model?.apiKey !== undefined && live?.spec.model.apiKeySet) fields.push('spec.model.apiKey');
  return fields;
}

function normalForm(labels: Record<string, string>, spec: Record<string, unknown>): SpecView {
  const sortedLabels = Object.fromEntries(Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)));
  return { metadata: { labels: sortedLabels }, spec: dropUndefined(spec) as Record<string, unknown> };
}

function dropUndefined(value: unknown): unknown {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([, v]) => v !== undefined)
      .map(([k, v]) => [k, dropUndefined(v)]),
  );
}

export function renderView(view: SpecView): string[] {
  return stringify(view, { lineWidth: 0 }).replace(/\n$/, '').split('\n');
}

/**
 * A unified diff (`@@ -a,b +c,d @@` hunks, three lines of context) of two line lists, or ''
 * when they are equal. Longest-common-subsequence: manifests are small, O(n·m) is fine.
 */
export function unifiedDiff(oldLines: string[], newLines: string[], oldLabel: string, newLabel: string, context = 3): string {
  const ops = lineOps(oldLines, newLines);
  if (ops.every((op) => op.kind === ' ')) return '';
  const out = [`--- ${oldLabel}`, `+++ ${newLabel}`];
  const changed = ops.map((op, i) => (op.kind === ' ' ? -1 : i)).filter((i) => i >= 0);
  // Group changes whose context windows touch into one hunk.
  let start = 0;
  while (start < changed.length) {
    let end = start;
    while (end + 1 < changed.length && (changed[end + 1] as number) - (changed[end] as number) <= 2 * context) end++;
    const from = Math.max(0, (changed[start] as number) - context);
    const to = Math.min(ops.length, (changed[end] as number) + context + 1);
    const hunk = ops.slice(from, to);
    const before = ops.slice(0, from);
    const oldStart = before.filter((op) => op.kind !== '+').length + 1;
    const newStart = before.filter((op) => op.kind !== '-').length + 1;
    const oldCount = hunk.filter((op) => op.kind !== '+').length;
    const newCount = hunk.filter((op) => op.kind !== '-').length;
    out.push(
      `@@ -${oldCount === 0 ? oldStart - 1 : oldStart},${oldCount} +${newCount === 0 ? newStart - 1 : newStart},${newCount} @@`,
    );
    for (const op of hunk) out.push(`${op.kind}${op.line}`);
    start = end + 1;
  }
  return `${out.join('\n')}\n`;
}

interface LineOp {
  kind: ' ' | '-' | '+';
  line: string;
}

function lineOps(a: string[], b: string[]): LineOp[] {
  // lcs[i][j] = length of the LCS of a[i..] and b[j..].
  const lcs: number[][] = Array.from({ length: a.length + 1 }, () => new Array<number>(b.length + 1).fill(0));
  for (let i = a.length - 1; i >= 0; i--) {
    for (let j = b.length - 1; j >= 0; j--) {
      const row = lcs[i] as number[];
      row[j] = a[i] === b[j] ? (lcs[i + 1]?.[j + 1] ?? 0) + 1 : Math.max(lcs[i + 1]?.[j] ?? 0, row[j + 1] ?? 0);
    }
  }
  const ops: LineOp[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    if (a[i] === b[j]) {
      ops.push({ kind: ' ', line: a[i] as string });
      i++;
      j++;
    } else if ((lcs[i + 1]?.[j] ?? 0) >= (lcs[i]?.[j + 1] ?? 0)) {
      ops.push({ kind: '-', line: a[i++] as string });
    } else {
      ops.push({ kind: '+', line: b[j++] as string });
    }
  }
  while (i < a.length) ops.push({ kind: '-', line: a[i++] as string });
  while (j < b.length) ops.push({ kind: '+', line: b[j++] as string });
  return ops;
}
