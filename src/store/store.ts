import type { Customer, CustomerStatus } from '../domain/customer.js';

/**
 * What the controller needs of the store, and all it may use: the desired customers with their
 * secrets opened, status and events written back, host ports held. The real implementations are
 * `CustomerStore` and `PortReservations` (Postgres or the embedded PGlite); the controller
 * imports this file, the composition root builds them.
 */

export type EventType = 'Normal' | 'Warning';

/** An event about a customer, as the controller records it (Kubernetes-style: repeats aggregate). */
export interface StoreEvent {
  type: EventType;
  reason: string;
  message: string;
}

export interface CustomerSecrets {
  telegramBotToken?: string;
  modelApiKey?: string;
}

/** A customer with its secrets opened: for the controller only, never for responses or logs. */
export interface ReconcileView {
  customer: Customer;
  secrets: CustomerSecrets;
  /** Absent until the controller first generates it. */
  gatewayToken: string | undefined;
  /**
   * The customer's host port reservations, read in the same query (a reconcile of one customer
   * then reads the store once); absent where the view was read without them (a full pass lists
   * the reservations on their own).
   */
  ports?: Partial<Record<PortSlot, number>>;
  /**
   * The warm pool slot this customer was bound to, while its row lasts (until the slot's container
   * is gone): the container counts as this customer's, with the hashes recorded at the claim.
   */
  binding?: PoolBinding;
}

/** A customer's claim on a warm pool slot (see domain/pool.ts and store/pool-store.ts). */
export interface PoolBinding {
  slot: number;
  /** The customer's spec hash and own hash when it was claimed: what the slot's container counts as. */
  specHash: string;
  ownHash: string;
  boundAt: Date;
  /** When the slot's gateway was seen answering with the customer's token; null until then. */
  appliedAt: Date | null;
  /** Why the bind was given up (its container is then replaced by a fresh one); null otherwise. */
  failed: string | null;
  /** The token the slot's gateway ran with before the customer's configuration reached it. */
  slotToken: string;
}

/** A customer that should have a route: active ones route to their reserved port, suspended ones show the page. */
export interface RoutedCustomer {
  name: string;
  state: 'active' | 'suspended';
  /** The reserved host port (slot `current`); none yet for a customer whose port is not reserved. */
  port: number | undefined;
}

export interface ControllerStore {
  /** What one reconcile reads, in one query; undefined for a customer that is gone (or never was). */
  reconcileView(name: string): Promise<ReconcileView | undefined>;
  /** Every live customer's reconcile view in one query (a full resync reads the store once). */
  reconcileViews(): Promise<Map<string, ReconcileView>>;
  /** The customer's gateway token: generated once, the same on every later call. */
  gatewayToken(name: string): Promise<string>;
  /** Writes status when it changed and describes no older generation than the stored one; says whether it wrote. */
  updateStatus(name: string, status: CustomerStatus): Promise<boolean>;
  /** Records an event (repeats aggregate with a count). */
  recordEvent(name: string, event: StoreEvent): Promise<void>;
  /**
   * One reconcile's writes in one transaction: the status (as `updateStatus`; none when
   * undefined) and its events (as `recordEvent`). Says whether the status was written.
   */
  writeStatusAndEvents(name: string, status: CustomerStatus | undefined, events: readonly StoreEvent[]): Promise<boolean>;
  /** Marks a torn-down, purged customer as gone; its name may be used again. */
  markDeleted(name: string): Promise<void>;
}

/**
 * A reservation slot: `current` (served on), `next` (a blue-green update's new container) or
 * `pool` (a warm pool slot's, held under its key `pool_<id>` until a claim makes it a customer's).
 */
export type PortSlot = 'current' | 'next' | 'pool';

/**
 * Host ports handed to customers' containers, held in the store so a crash never loses one.
 * Slot `current` is the port a customer is served on; `next` a blue-green update's second port.
 */
export interface HostPorts {
  find(customer: string, slot?: PortSlot): Promise<number | undefined>;
  findNext(customer: string): Promise<number | undefined>;
  /** Every reservation of the slot, by customer (a full resync reads them once). */
  all(slot?: PortSlot): Promise<Map<string, number>>;
  /** The customer's port, reserved now unless it has one. Throws PortsExhaustedError when none is free. */
  reserve(customer: string, avoid?: readonly number[], slot?: PortSlot): Promise<number>;
  reserveNext(customer: string, avoid?: readonly number[]): Promise<number>;
  /** Moves the customer off a port something else holds; returns the new one. */
  move(customer: string, clashing: number, slot?: PortSlot): Promise<number>;
  release(customer: string): Promise<void>;
  releaseNext(customer: string): Promise<void>;
  /** The next port becomes the customer's port and the old one is released, in one transaction. */
  promote(customer: string): Promise<number | undefined>;
}
