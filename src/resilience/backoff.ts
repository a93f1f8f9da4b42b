/**
 * The delay before reconnect attempt `failures + 1` of a long-lived stream (Docker events,
 * Kubernetes watches): doubling from `minMs` up to `maxMs`, each jittered by ±50% so replicas
 * and streams that failed together do not reconnect in lockstep.
 */
export function reconnectDelayMs(failures: number, minMs: number, maxMs: number, random: () => number = Math.random): number {
  const base = Math.min(maxMs, minMs * 2 ** failures);
  return Math.round(base * (0.5 + random()));
}
