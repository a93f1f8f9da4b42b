import { z } from 'zod';
import { API_VERSION, fieldErrors, PLAN_NAMES, ValidationError, type PlanName } from './customer.js';
import { OBJECT_PREFIX } from './naming.js';

/**
 * Warm pools: pre-started, unassigned assistants per plan, so a payment binds a customer to a
 * gateway that already runs instead of starting one (the OpenClaw gateway takes 20 s to a minute
 * to boot; it takes a customer's configuration in place, in about a second).
 *
 * Glossary
 * - pool: the desired number of unassigned assistants of one plan (`Pool` object, named by the
 *   plan; size 0, the default, runs nothing).
 * - slot: one pre-started assistant of a pool: a row in `pool_slots`, a container
 *   `blytz-pool_<id>` on its own network, a state folder `pool/slot-<id>/`, a host port.
 * - warming: the slot's container is starting; `ready`: it answers its probes and may be claimed;
 *   `retiring`: it is being removed (outdated, unhealthy, more than the pool's size); `bound`: a
 *   customer claimed it, and its container is now that customer's.
 * - claim: one Postgres transaction turning a ready slot into the customer's (slot bound, host
 *   port handed over); at most one customer ever gets a slot.
 * - bind: what follows a claim: the container renamed `blytz-<name>`, the folder moved to
 *   `customers/<name>/`, the customer's configuration written (the gateway reloads it), and the
 *   gateway seen answering with the customer's token.
 * - refill: after a claim the pool starts a new slot in the background.
 *
 * A slot is used once: it is never unbound, and a bound customer who leaves takes the container
 * and the folder with it; nothing returns to the pool.
 */

export const POOL_KIND = 'Pool';
/** The template pools run unless their spec names another (the customers' default). */
export const DEFAULT_POOL_TEMPLATE = 'personal-assistant';
/** Each slot holds an idle gateway (about 0.9 GiB): a pool is for a few slots, not for capacity. */
export const MAX_POOL_SIZE = 20;

export const poolSpecSchema = z
  .object({
    size: z
      .number({ error: 'must be a whole number of slots' })
      .int('must be a whole number of slots')
      .min(0, 'must be 0 or more')
      .max(MAX_POOL_SIZE, `must be at most ${MAX_POOL_SIZE} (each slot holds an idle assistant)`),
    template: z
      .string()
      .max(63)
      .regex(/^[a-z0-9][a-z0-9-]*$/, 'must be a template folder name')
      .default(DEFAULT_POOL_TEMPLATE),
  })
  .strict();

export const poolManifestSchema = z
  .object({
    apiVersion: z.literal(API_VERSION, { error: `must be ${API_VERSION}` }),
    kind: z.literal(POOL_KIND, { error: `must be ${POOL_KIND}` }),
    metadata: z
      .object({
        name: z.enum(PLAN_NAMES, { error: `must be a plan: ${PLAN_NAMES.join(', ')} (a pool is named by its plan)` }),
        // Set by the store; accepted so `get pool -o yaml` output applies again, otherwise ignored.
        generation: z.number().optional(),
        creationTimestamp: z.string().optional(),
        labels: z.record(z.string(), z.string()).optional(),
        annotations: z.record(z.string(), z.string()).optional(),
      })
      .strict(),
    spec: poolSpecSchema,
    // Status belongs to the controller: accepted in a manifest and ignored.
    status: z.unknown().optional(),
  })
  .strict();

export type PoolManifest = z.output<typeof poolManifestSchema>;

/** A pool as stored: its plan, how many ready slots it should hold, of which template. */
export interface PoolSpec {
  plan: PlanName;
  size: number;
  template: string;
}

/** What `blytz get pool` shows beside the size: the slots by state. */
export interface PoolStatus {
  /** Answering their probes, claimable. */
  ready: number;
  /** Starting. */
  warming: number;
  /** Claimed by a customer whose container it still is. */
  bound: number;
  /** Being removed. */
  retiring: number;
}

export interface PoolObject {
  apiVersion: typeof API_VERSION;
  kind: typeof POOL_KIND;
  metadata: { name: PlanName; generation: number; creationTimestamp?: string };
  spec: { size: number; template: string };
  status: PoolStatus & { message?: string };
}

/** A pool as the admin API shows it; a plan never set shows with size 0. */
export function poolObject(
  pool: { plan: PlanName; size: number; template: string; generation: number; createdAt?: Date; status: PoolStatus },
  message?: string,
): PoolObject {
  return {
    apiVersion: API_VERSION,
    kind: POOL_KIND,
    metadata: {
      name: pool.plan,
      generation: pool.generation,
      ...(pool.createdAt ? { creationTimestamp: pool.createdAt.toISOString() } : {}),
    },
    spec: { size: pool.size, template: pool.template },
    status: { ...pool.status, ...(message ? { message } : {}) },
  };
}

export const SLOT_STATES = ['warming', 'ready', 'retiring', 'bound'] as const;
export type SlotState = (typeof SLOT_STATES)[number];

/**
 * The slot's life, each arrow one conditional UPDATE (`... WHERE state = <from>`), so two
 * controllers (or a claim and a retirement) racing for one slot cannot both win. `gone` is the
 * row deleted: a retired slot once its container, folder and port are gone; a bound one once its
 * container is (the customer replaced it, or left). Nothing leads back: a slot is used once.
 */
export const SLOT_TRANSITIONS: Readonly<Record<SlotState, readonly (SlotState | 'gone')[]>> = {
  warming: ['ready', 'retiring'],
  ready: ['bound', 'retiring'],
  retiring: ['gone'],
  bound: ['gone'],
};

export function canTransition(from: SlotState, to: SlotState | 'gone'): boolean {
  return SLOT_TRANSITIONS[from].includes(to);
}

/**
 * What a slot's container, folder and port are called. The `_` cannot occur in a customer name
 * (a DNS-1123 label), so `blytz-pool_<id>` is never a customer's container or network, and the
 * reservation key `pool_<id>` never a customer's.
 */
export function poolSlotKey(id: number): string {
  return `pool_${id}`;
}

/**
 * The slot's key on the Docker engine (its network's name and its container's): `pool_<id>`, or
 * `pool_<instance>_<id>` for a control plane that shares its engine with others (BLYTZ_INSTANCE).
 * Slot ids count per database, so two control planes' first slots would otherwise share a name.
 */
export function poolEngineKey(id: number, instance?: string): string {
  return instance ? `pool_${instance}_${id}` : poolSlotKey(id);
}

export function poolContainerName(id: number, instance?: string): string {
  return `${OBJECT_PREFIX}${poolEngineKey(id, instance)}`;
}

/** The slot's state folder under `$BLYTZ_DATA_DIR/pool/` (a DNS-1123 label, like a customer's folder name). */
export function poolFolderName(id: number): string {
  return `slot-${id}`;
}

/** `slot-12` -> 12; undefined for anything else. */
export function slotOfFolder(folder: string): number | undefined {
  const match = /^slot-([1-9]\d{0,15})$/.exec(folder);
  return match ? Number(match[1]) : undefined;
}

/** A Pool manifest checked; throws ValidationError with every field's problem. */
export function parsePoolManifest(input: unknown): PoolManifest {
  const parsed = poolManifestSchema.safeParse(input);
  if (!parsed.success) throw new ValidationError(fieldErrors(parsed.error));
  return parsed.data;
}
