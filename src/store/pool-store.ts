import { randomBytes } from 'node:crypto';
import { sql, type Kysely, type Selectable } from 'kysely';
import type { PlanName } from '../domain/customer.js';
import { poolSlotKey, type PoolSpec, type PoolStatus, type SlotState } from '../domain/pool.js';
import type { DatabaseHandle } from './database.js';
import { isUniqueViolation } from './errors.js';
import type { PortReservations } from './port-reservations.js';
import type { Database, PoolSlotsTable } from './schema.js';
import type { SecretBox } from './secret-box.js';
import type { PoolBinding } from './store.js';

/**
 * Warm pools in the store: the size per plan (desired state) and the slots (migration 0009).
 * Every change of a slot's state is one conditional statement (`... WHERE state = <from>`), so a
 * claim and a retirement racing for one slot cannot both win, and a claim is one transaction:
 * the slot bound to the customer and its host port handed over, or nothing at all.
 */

export interface StoredPool extends PoolSpec {
  generation: number;
  createdAt: Date;
  status: PoolStatus;
}

/** A slot as the pool controller sees it in the store. */
export interface SlotRow {
  id: number;
  plan: string;
  template: string;
  state: SlotState;
  fingerprint: string;
  customer: string | null;
  createdAt: Date;
}

/** A fresh slot: its row (warming) and the token its gateway starts with. */
export interface NewSlot {
  id: number;
  token: string;
}

export interface ClaimRequest {
  customer: string;
  plan: string;
  template: string;
  /** The customer's fleet fingerprint: only a slot made for the same image, limits and template fits. */
  fingerprint: string;
  /** What the slot's container counts as from now on (the customer's desired hashes). */
  specHash: string;
  ownHash: string;
}

export interface Claimed extends PoolBinding {
  /** The slot's host port, now the customer's `current` reservation. */
  port: number;
}

/** The sealing context of a slot's gateway token. */
export function slotTokenContext(id: number): string {
  return `pool-slot/${id}/gateway`;
}

type BindingColumns = Pick<Selectable<PoolSlotsTable>, 'id' | 'spec_hash' | 'own_hash' | 'bound_at' | 'applied_at' | 'bind_failed' | 'gateway_token_enc'>;

/** A bound slot's row as the customer's binding (its token opened). */
export function bindingOf(row: BindingColumns, box: SecretBox): PoolBinding {
  return {
    slot: row.id,
    specHash: row.spec_hash ?? '',
    ownHash: row.own_hash ?? '',
    boundAt: new Date(row.bound_at ?? 0),
    appliedAt: row.applied_at ? new Date(row.applied_at) : null,
    failed: row.bind_failed,
    slotToken: box.open(row.gateway_token_enc, slotTokenContext(row.id)),
  };
}

export class PoolStore {
  readonly #db: Kysely<Database>;
  readonly #box: SecretBox;
  readonly #ports: PortReservations;

  constructor(handle: DatabaseHandle, box: SecretBox, ports: PortReservations) {
    this.#db = handle.db;
    this.#box = box;
    this.#ports = ports;
  }

  /** Sets a plan's pool size (and template); returns the pool. The generation moves only on a change. */
  async apply(spec: PoolSpec): Promise<{ pool: StoredPool; created: boolean; changed: boolean }> {
    const before = await this.#db.selectFrom('pools').selectAll().where('plan', '=', spec.plan).executeTakeFirst();
    const changed = !before || before.size !== spec.size || before.template !== spec.template;
    if (changed) {
      await this.#db
        .insertInto('pools')
        .values({ plan: spec.plan, size: spec.size, template: spec.template })
        .onConflict((oc) =>
          oc.column('plan').doUpdateSet({
            size: spec.size,
            template: spec.template,
            generation: sql`pools.generation + 1`,
            updated_at: sql`now()`,
          }),
        )
        .execute();
    }
    const pool = await this.get(spec.plan);
    if (!pool) throw new Error(`pool ${spec.plan} vanished after it was written`);
    return { pool, created: !before, changed };
  }

  /** A plan's pool with its slots counted; undefined when never set (size 0). */
  async get(plan: string): Promise<StoredPool | undefined> {
    return (await this.list()).find((p) => p.plan === plan);
  }

  /** Every pool ever set, with its slots counted by state, in one query. */
  async list(): Promise<StoredPool[]> {
    const { rows } = await sql<{
      plan: string;
      size: number;
      template: string;
      generation: number;
      created_at: Date;
      warming: number;
      ready: number;
      retiring: number;
      bound: number;
    }>`
      SELECT p.plan, p.size, p.template, p.generation, p.created_at,
        count(*) FILTER (WHERE s.state = 'warming')::int AS warming,
        count(*) FILTER (WHERE s.state = 'ready')::int AS ready,
        count(*) FILTER (WHERE s.state = 'retiring')::int AS retiring,
        count(*) FILTER (WHERE s.state = 'bound')::int AS bound
      FROM pools p LEFT JOIN pool_slots s ON s.plan = p.plan
      GROUP BY p.plan ORDER BY p.plan
    `.execute(this.#db);
    return rows.map((r) => ({
      plan: r.plan as PlanName,
      size: r.size,
      template: r.template,
      generation: Number(r.generation),
      createdAt: new Date(r.created_at),
      status: { warming: r.warming, ready: r.ready, retiring: r.retiring, bound: r.bound },
    }));
  }

  /** Every slot row (the pool controller's observation of the store). */
  async slots(): Promise<SlotRow[]> {
    const rows = await this.#db.selectFrom('pool_slots').selectAll().orderBy('id').execute();
    return rows.map((r) => ({
      id: r.id,
      plan: r.plan,
      template: r.template,
      state: r.state,
      fingerprint: r.fingerprint,
      customer: r.customer,
      createdAt: new Date(r.created_at),
    }));
  }

  /** A new slot's row, warming, with a fresh gateway token: written before anything of it exists. */
  async createSlot(plan: string, template: string, fingerprint: string): Promise<NewSlot> {
    const token = randomBytes(24).toString('base64url');
    return this.#db.transaction().execute(async (tx) => {
      // The token is sealed with the slot's id, which the insert makes: a placeholder first.
      const { id } = await tx
        .insertInto('pool_slots')
        .values({ plan, template, state: 'warming', fingerprint, gateway_token_enc: '' })
        .returning('id')
        .executeTakeFirstOrThrow();
      await tx
        .updateTable('pool_slots')
        .set({ gateway_token_enc: this.#box.seal(token, slotTokenContext(id)) })
        .where('id', '=', id)
        .execute();
      return { id, token };
    });
  }

  /** The gateway token a slot runs with. */
  async slotToken(id: number): Promise<string | undefined> {
    const row = await this.#db.selectFrom('pool_slots').select('gateway_token_enc').where('id', '=', id).executeTakeFirst();
    return row ? this.#box.open(row.gateway_token_enc, slotTokenContext(id)) : undefined;
  }

  /** The slot's host port (idempotent: the one it holds, if any). */
  reservePort(id: number): Promise<number> {
    return this.#ports.reserve(poolSlotKey(id), [], 'pool');
  }

  /** warming -> ready; false when the slot was not warming any more. */
  async markReady(id: number): Promise<boolean> {
    return this.#move(id, ['warming'], { state: 'ready', ready_at: new Date() });
  }

  /** warming or ready -> retiring; false when a claim (or another retirement) came first. */
  async retire(id: number): Promise<boolean> {
    return this.#move(id, ['warming', 'ready'], { state: 'retiring' });
  }

  /** A retired slot's row and host port go, together. False when it was not retiring. */
  async deleteRetired(id: number): Promise<boolean> {
    return this.#db.transaction().execute(async (tx) => {
      const deleted = await tx.deleteFrom('pool_slots').where('id', '=', id).where('state', '=', 'retiring').executeTakeFirst();
      if (Number(deleted.numDeletedRows) === 0) return false;
      await tx.deleteFrom('port_reservations').where('customer', '=', poolSlotKey(id)).where('slot', '=', 'pool').execute();
      return true;
    });
  }

  /** A bound slot whose container is gone: its row goes (the port is the customer's). */
  async forgetBound(id: number): Promise<boolean> {
    const deleted = await this.#db.deleteFrom('pool_slots').where('id', '=', id).where('state', '=', 'bound').executeTakeFirst();
    return Number(deleted.numDeletedRows) > 0;
  }

  /**
   * Claims a ready slot of the customer's plan, template and fingerprint for the customer, in one
   * transaction: the oldest ready slot is locked (`SKIP LOCKED`: concurrent claims take different
   * slots and never wait on each other), bound to the customer (whose name is unique among
   * slots, so one customer never holds two), and its host port becomes the customer's `current`
   * reservation (a stale one of the customer's, with no container on it, is dropped first).
   * Undefined when no slot is ready: nothing changed, and the customer starts cold.
   */
  async claim(request: ClaimRequest): Promise<Claimed | undefined> {
    try {
      return await this.#db.transaction().execute(async (tx) => {
        const customer = await tx
          .selectFrom('customers')
          .select('uid')
          .where('name', '=', request.customer)
          .where('deleted_at', 'is', null)
          .executeTakeFirst();
        if (!customer) return undefined;
        const { rows } = await sql<{ id: number }>`
          SELECT id FROM pool_slots
          WHERE state = 'ready' AND plan = ${request.plan} AND template = ${request.template} AND fingerprint = ${request.fingerprint}
          ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED
        `.execute(tx);
        const id = rows[0]?.id;
        if (id === undefined) return undefined;
        const slot = await tx
          .updateTable('pool_slots')
          .set({
            state: 'bound',
            customer: request.customer,
            customer_uid: customer.uid,
            spec_hash: request.specHash,
            own_hash: request.ownHash,
            bound_at: new Date(),
          })
          .where('id', '=', id)
          .where('state', '=', 'ready')
          .returningAll()
          .executeTakeFirst();
        if (!slot) return undefined;
        await tx.deleteFrom('port_reservations').where('customer', '=', request.customer).where('slot', '=', 'current').execute();
        const moved = await tx
          .updateTable('port_reservations')
          .set({ customer: request.customer, slot: 'current', reserved_at: new Date() })
          .where('customer', '=', poolSlotKey(id))
          .where('slot', '=', 'pool')
          .returning('port')
          .executeTakeFirst();
        // A ready slot always holds its port; without one the claim is void (rolled back).
        if (!moved) throw new SlotWithoutPortError(id);
        return { ...bindingOf(slot, this.#box), port: moved.port };
      });
    } catch (error) {
      // The customer holds a slot already (a claim by a former leader that committed): not twice.
      if (isUniqueViolation(error, 'pool_slots_customer_key')) return undefined;
      if (error instanceof SlotWithoutPortError) return undefined;
      throw error;
    }
  }

  /** The bound slot's gateway took the customer's configuration. */
  async markApplied(id: number): Promise<void> {
    await this.#db.updateTable('pool_slots').set({ applied_at: new Date() }).where('id', '=', id).where('state', '=', 'bound').execute();
  }

  /** The bind was given up: its container counts as outdated from now on and is replaced. */
  async markBindFailed(id: number, reason: string): Promise<void> {
    await this.#db
      .updateTable('pool_slots')
      .set({ bind_failed: reason.slice(0, 500) })
      .where('id', '=', id)
      .where('state', '=', 'bound')
      .execute();
  }

  /** Key rotation: every slot's token sealed again under the current key. */
  async resealAll(): Promise<number> {
    const rows = await this.#db.selectFrom('pool_slots').select(['id', 'gateway_token_enc']).execute();
    let resealed = 0;
    for (const row of rows) {
      const context = slotTokenContext(row.id);
      if (!this.#box.sealedWithPreviousKey(row.gateway_token_enc, context)) continue;
      const token = this.#box.open(row.gateway_token_enc, context);
      await this.#db.updateTable('pool_slots').set({ gateway_token_enc: this.#box.seal(token, context) }).where('id', '=', row.id).execute();
      resealed++;
    }
    return resealed;
  }

  async #move(id: number, from: SlotState[], set: Partial<Record<keyof PoolSlotsTable, unknown>>): Promise<boolean> {
    const result = await this.#db
      .updateTable('pool_slots')
      .set(set as never)
      .where('id', '=', id)
      .where('state', 'in', from)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }
}

class SlotWithoutPortError extends Error {
  constructor(id: number) {
    super(`pool slot ${id} holds no host port`);
    this.name = 'SlotWithoutPortError';
  }
}
