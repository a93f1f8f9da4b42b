/**
 * How often a container our health probe keeps finding unhealthy is restarted: the kubelet's
 * CrashLoopBackOff for our own probe. Without it an assistant that never becomes healthy (a bad
 * model key, a broken image) is restarted every time its starting grace runs out, forever, each
 * restart costing a cold start on a busy host. Here the wait between restarts of one container
 * doubles from `initialMs` up to `maxMs`, and resets once the container has stayed healthy for
 * `resetAfterMs` (the kubelet's rule: a container that recovers briefly and fails again keeps
 * its back-off).
 *
 * Kept in memory, as the kubelet keeps its own: a restarted controller (or a new leader) starts
 * every back-off from the beginning, a few early restarts per unhealthy container at worst.
 */
export interface RestartBackoffOptions {
  initialMs: number;
  maxMs: number;
  resetAfterMs: number;
}

export const DEFAULT_RESTART_BACKOFF: RestartBackoffOptions = { initialMs: 30_000, maxMs: 300_000, resetAfterMs: 600_000 };

/** Where one customer's container stands: how often it was restarted, and when it may be again. */
export interface RestartHold {
  restarts: number;
  /** Epoch ms before which the container is not restarted again. */
  notBefore: number;
}

interface Entry {
  restarts: number;
  lastRestartAt: number;
  healthySince?: number;
}

export class RestartBackoff {
  readonly #options: RestartBackoffOptions;
  /** By customer name, then container id (a blue-green update has two containers). */
  readonly #entries = new Map<string, Map<string, Entry>>();

  constructor(options: RestartBackoffOptions = DEFAULT_RESTART_BACKOFF) {
    this.#options = options;
  }

  /** The hold on restarting this container, or undefined when it may be restarted now. */
  hold(customer: string, containerId: string, now: number): RestartHold | undefined {
    const entry = this.#entries.get(customer)?.get(containerId);
    if (!entry) return undefined;
    const delay = Math.min(this.#options.initialMs * 2 ** (entry.restarts - 1), this.#options.maxMs);
    const notBefore = entry.lastRestartAt + delay;
    return notBefore > now ? { restarts: entry.restarts, notBefore } : undefined;
  }

  /** The container was restarted now; returns how many times so far. */
  restarted(customer: string, containerId: string, now: number): number {
    let containers = this.#entries.get(customer);
    if (!containers) this.#entries.set(customer, (containers = new Map()));
    const restarts = (containers.get(containerId)?.restarts ?? 0) + 1;
    containers.set(containerId, { restarts, lastRestartAt: now });
    return restarts;
  }

  /**
   * The customer's containers as just observed: one healthy long enough loses its back-off, and
   * containers that are gone (replaced, removed, the customer deleted) are forgotten.
   */
  observed(customer: string, containers: readonly { id: string; health: string }[], now: number): void {
    const entries = this.#entries.get(customer);
    if (!entries) return;
    for (const [id, entry] of entries) {
      const container = containers.find((c) => c.id === id);
      if (!container) {
        entries.delete(id);
      } else if (container.health !== 'healthy') {
        delete entry.healthySince;
      } else {
        entry.healthySince ??= now;
        if (now - entry.healthySince >= this.#options.resetAfterMs) entries.delete(id);
      }
    }
    if (entries.size === 0) this.#entries.delete(customer);
  }
}

export function restartsText(restarts: number): string {
  return `restarted ${restarts} time${restarts === 1 ? '' : 's'}`;
}
