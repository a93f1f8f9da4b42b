import type { PoolObject } from '../domain/pool.js';
import type { CustomerObject } from './client.js';

/**
 * kubectl-like text output: tables aligned with three spaces between columns, `<none>` for
 * missing values, ages in one unit (5s, 5m, 3h, 2d, 1y).
 */

export const NONE = '<none>';
const COLUMN_GAP = '   ';

/** The largest whole unit, like kubectl's AGE column; a future time (clock skew) shows 0s. */
export function formatAge(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  if (seconds < 60) return `${seconds}s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes}m`;
  const hours = Math.floor(minutes / 60);
  if (hours < 24) return `${hours}h`;
  const days = Math.floor(hours / 24);
  if (days < 365) return `${days}d`;
  return `${Math.floor(days / 365)}y`;
}

export function ageSince(timestamp: string | undefined, now: Date): string {
  if (!timestamp) return NONE;
  const time = Date.parse(timestamp);
  return Number.isNaN(time) ? NONE : formatAge(now.getTime() - time);
}

/** Pads every column but the last to its widest cell; no trailing spaces. */
export function formatTable(headers: string[], rows: string[][], indent = ''): string {
  const all = [headers, ...rows];
  const widths = headers.map((_, col) => Math.max(...all.map((row) => (row[col] ?? '').length)));
  return all
    .map(
      (row) =>
        indent +
        headers
          .map((_, col) => {
            const cell = row[col] ?? '';
            return col === headers.length - 1 ? cell : cell.padEnd(widths[col] ?? 0);
          })
          .join(COLUMN_GAP)
          .trimEnd(),
    )
    .join('\n');
}

/** `Key:   value` pairs with values aligned, as in `kubectl describe`. */
export function formatFields(pairs: Array<[string, string]>, indent = ''): string {
  const width = Math.max(...pairs.map(([key]) => key.length + 1));
  return pairs.map(([key, value]) => `${indent}${`${key}:`.padEnd(width)}  ${value}`.trimEnd()).join('\n');
}

export const CUSTOMER_COLUMNS = ['NAME', 'STATE', 'PHASE', 'READY', 'URL', 'AGE'];
export const CUSTOMER_WIDE_COLUMNS = [...CUSTOMER_COLUMNS, 'PLAN', 'GENERATION', 'OBSERVED', 'PORT'];

export function customerRow(customer: CustomerObject, now: Date, wide = false): string[] {
  const { status, spec, metadata } = customer;
  const ready = status.conditions?.find((c) => c.type === 'Ready')?.status ?? 'Unknown';
  const row = [
    metadata.name,
    spec.state,
    status.phase ?? NONE,
    ready,
    status.url ?? NONE,
    ageSince(metadata.creationTimestamp, now),
  ];
  if (!wide) return row;
  return [
    ...row,
    spec.plan,
    String(metadata.generation),
    status.observedGeneration === undefined ? NONE : String(status.observedGeneration),
    status.hostPort === undefined ? NONE : String(status.hostPort),
  ];
}

export function customerTable(customers: CustomerObject[], now: Date, wide = false): string {
  return formatTable(
    wide ? CUSTOMER_WIDE_COLUMNS : CUSTOMER_COLUMNS,
    customers.map((c) => customerRow(c, now, wide)),
  );
}

export const POOL_COLUMNS = ['PLAN', 'DESIRED', 'READY', 'WARMING', 'BOUND'];
export const POOL_WIDE_COLUMNS = [...POOL_COLUMNS, 'RETIRING', 'TEMPLATE', 'GENERATION'];

/** Warm pools, one row per plan: DESIRED is the size; BOUND counts customers still on a slot's container. */
export function poolTable(pools: PoolObject[], wide = false): string {
  const rows = pools.map((p) => {
    const row = [p.metadata.name, String(p.spec.size), String(p.status.ready), String(p.status.warming), String(p.status.bound)];
    return wide ? [...row, String(p.status.retiring), p.spec.template, String(p.metadata.generation)] : row;
  });
  return formatTable(wide ? POOL_WIDE_COLUMNS : POOL_COLUMNS, rows);
}
