import type { ObservedContainer } from '../../runtime/runtime.js';

/** What mapping needs of a customer's binding (the store's `PoolBinding`). */
export interface BindingView {
  slot: number;
  specHash: string;
  ownHash: string;
  appliedAt: Date | null;
  failed: string | null;
}

/**
 * A customer's containers as the planner must see them when one was a warm pool slot. Its labels
 * are the slot's (they cannot change after creation), so through the customer's binding (the
 * store's record of the claim) it counts as what the customer's own container would be:
 *
 * - running, bound to this customer: the spec and own hash recorded at the claim, so nothing
 *   recreates it for its slot name, folder path or network; a later real change of the
 *   customer's spec (plan, fleet image) differs from those and recreates it as ever. Until the
 *   gateway is seen taking the customer's configuration it is `starting`, not ready.
 * - stopped (killed, crashed, suspended and resumed) or given up: no spec hash, so it is removed
 *   and a fresh container of the customer's own is made. It can never start again: the engine's
 *   record of it still mounts the slot's folder path, which the claim moved away.
 * - a slot's container the customer holds no binding for (a row removed by hand): the slot's
 *   own hashes, which no customer's equal, so it is replaced at once.
 *
 * Pure.
 */
export function boundContainers(containers: ObservedContainer[], binding: BindingView | undefined): ObservedContainer[] {
  return containers.map((container) => {
    if (container.poolSlot === undefined) return container;
    if (!binding || binding.slot !== container.poolSlot) return container;
    const running = container.state === 'running';
    let mapped: ObservedContainer;
    if (!running || binding.failed !== null) {
      const { specHash: _slotHash, ownHash: _slotOwn, ...rest } = container;
      mapped = { ...rest, specHash: undefined };
    } else {
      mapped = { ...container, specHash: binding.specHash, ownHash: binding.ownHash };
    }
    // Whatever the engine says, never healthy before the gateway took the customer's configuration.
    if (binding.appliedAt === null && container.health === 'healthy') {
      mapped.health = 'starting';
      mapped.healthMessage = `warm pool slot ${binding.slot} is taking the customer's configuration`;
    }
    return mapped;
  });
}
