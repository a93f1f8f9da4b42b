/**
 * What a controller needs to know about leadership: whether it leads, and when that changes.
 * Implemented by the Postgres advisory-lock elector (store/leader-elector.ts) and the
 * Kubernetes Lease elector; this file imports nothing, so an elector depends on no more of the
 * controller than this.
 */
export interface Leadership {
  isLeader(): boolean;
  /**
   * Calls `listener` on every change, synchronously, so a lost leadership stops work before
   * anything else happens in this process. Returns an unsubscribe function.
   */
  onChange(listener: (leading: boolean) => void): () => void;
}

