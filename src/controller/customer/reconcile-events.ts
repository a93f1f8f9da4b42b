import type { EventType, StoreEvent } from '../../store/store.js';

/**
 * The events one reconcile records, kept until its status is written so that both go to the
 * store in one statement (`ControllerStore.writeStatusAndEvents`), as Kubernetes' event
 * recorder batches what a controller reports rather than writing each event on its own.
 */
export class ReconcileEvents {
  readonly #events: StoreEvent[] = [];

  record(type: EventType, reason: string, message: string): void {
    this.#events.push({ type, reason, message });
  }

  /** The customer was marked deleted, and its events with it: these go too. */
  discard(): void {
    this.#events.length = 0;
  }

  /** The events recorded so far, in order; the buffer is empty afterwards. */
  take(): StoreEvent[] {
    return this.#events.splice(0);
  }
}
