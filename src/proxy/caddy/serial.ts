/**
 * Runs tasks one at a time, in call order. The route table's writes are read-compare-write
 * sequences against one shared document (Caddy's config); two of them interleaving could insert
 * the same `@id` twice (Caddy 2.6.2 accepts duplicates silently) or lose a write.
 */
export class Serial {
  #tail: Promise<unknown> = Promise.resolve();

  run<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#tail.then(task, task);
    // The chain must survive a failed task; the caller still sees the failure through `result`.
    this.#tail = result.catch(() => undefined);
    return result;
  }
}
