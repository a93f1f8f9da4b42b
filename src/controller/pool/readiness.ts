/**
 * Which pools have a ready slot, as the pool controller last counted them, so the customer
 * controller tries a claim only when one may succeed: with every pool at size 0 (the default) a
 * new customer costs no extra query at all. Only a hint: a claim decides, in Postgres, and a
 * claim that finds nothing just starts the customer cold. Keyed `<template>/<plan>` (a
 * customer's fleet key); both controllers run in the leader, which owns this.
 */
export class PoolReadiness {
  readonly #ready = new Map<string, number>();

  /** The pool controller's count after a pass: ready slots per `<template>/<plan>`. */
  set(counts: ReadonlyMap<string, number>): void {
    this.#ready.clear();
    for (const [key, count] of counts) if (count > 0) this.#ready.set(key, count);
  }

  mayClaim(key: string): boolean {
    return (this.#ready.get(key) ?? 0) > 0;
  }

  /** A claim took one (or found none: then none until the next count). */
  claimed(key: string, found: boolean): void {
    const left = found ? (this.#ready.get(key) ?? 1) - 1 : 0;
    if (left > 0) this.#ready.set(key, left);
    else this.#ready.delete(key);
  }
}
