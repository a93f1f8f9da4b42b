import { randomBytes, randomUUID } from 'node:crypto';
import { sql, type Kysely, type QueryCreator, type Transaction } from 'kysely';
import { canonicalJson } from '../domain/canonical-json.js';
import type { Customer, CustomerStatus, DesiredCustomer, DesiredState, PlanName } from '../domain/customer.js';
import type { DatabaseHandle } from './database.js';
import { ConflictError, isUniqueViolation, NotFoundError } from './errors.js';
import type { CustomerRow, Database, NewCustomerRow } from './schema.js';
import { bindingOf } from './pool-store.js';
import type { SecretBox } from './secret-box.js';
import type { ControllerStore, CustomerSecrets, EventType, PortSlot, ReconcileView, RoutedCustomer, StoreEvent } from './store.js';

export interface ApplyOptions {
  /** When given, the apply fails with ConflictError unless the stored object is at this version. */
  resourceVersion?: string | undefined;
}

export interface ApplyResult {
  customer: Customer;
  created: boolean;
  /** False for a no-op apply: nothing stored changed and generation stayed the same. */
  changed: boolean;
}

export interface ListOptions {
  limit?: number;
  /** The name to continue after (the `continue` token of the previous page). */
  continueAfter?: string | undefined;
  labelSelector?: Record<string, string> | undefined;
}

export interface CustomerPage {
  items: Customer[];
  continue?: string;
}

export interface CustomerEvent {
  type: EventType;
  reason: string;
  message: string;
  count: number;
  firstSeen: Date;
  lastSeen: Date;
}

const MAX_EVENT_MESSAGE = 1000;
const EVENTS_KEPT_PER_CUSTOMER = 100;

/** Events of one batch with the same type, reason and message, counted once, in the order of their last occurrence. */
function aggregateEvents(events: readonly StoreEvent[]): Array<StoreEvent & { count: number }> {
  const byIdentity = new Map<string, StoreEvent & { count: number }>();
  for (const event of events) {
    const message = event.message.slice(0, MAX_EVENT_MESSAGE);
    const key = JSON.stringify([event.type, event.reason, message]);
    const seen = byIdentity.get(key);
    byIdentity.delete(key); // re-inserted last: the order is that of the last occurrence
    byIdentity.set(key, { type: event.type, reason: event.reason, message, count: (seen?.count ?? 0) + 1 });
  }
  return [...byIdentity.values()];
}

/**
 * Desired and observed customer state in Postgres (or PGlite). Writers apply specs; the
 * controller alone writes status and events. Secret fields are sealed with the SecretBox before
 * they reach a row and are only opened by `readSecrets`.
 */
export class CustomerStore implements ControllerStore {
  readonly #db: Kysely<Database>;
  readonly #box: SecretBox;

  constructor(handle: DatabaseHandle, box: SecretBox) {
    this.#db = handle.db;
    this.#box = box;
  }

  get db(): Kysely<Database> {
    return this.#db;
  }

  async get(name: string): Promise<Customer | undefined> {
    const row = await this.#db
      .selectFrom('customers')
      .selectAll()
      .where('name', '=', name)
      .where('deleted_at', 'is', null)
      .executeTakeFirst();
    return row ? toCustomer(row) : undefined;
  }

  async list(options: ListOptions = {}): Promise<CustomerPage> {
    const limit = Math.min(Math.max(options.limit ?? 500, 1), 5000);
    let query = this.#db
      .selectFrom('customers')
      .selectAll()
      .where('deleted_at', 'is', null)
      .orderBy('name')
      .limit(limit + 1);
    if (options.continueAfter) query = query.where('name', '>', options.continueAfter);
    if (options.labelSelector && Object.keys(options.labelSelector).length > 0) {
      query = query.where(sql<boolean>`labels @> ${JSON.stringify(options.labelSelector)}::jsonb`);
    }
    const rows = await query.execute();
    const items = rows.slice(0, limit).map(toCustomer);
    const last = items.at(-1);
    return rows.length > limit && last ? { items, continue: last.name } : { items };
  }

  /** Every stored customer, page by page (for a full resync). */
  async *all(pageSize = 1000): AsyncGenerator<Customer> {
    let continueAfter: string | undefined;
    do {
      const page = await this.list({ limit: pageSize, continueAfter });
      yield* page.items;
      continueAfter = page.continue;
    } while (continueAfter);
  }

  /** Names of every stored customer, cheaper than `all` for enqueueing a resync. */
  async listNames(): Promise<string[]> {
    const rows = await this.#db.selectFrom('customers').select('name').where('deleted_at', 'is', null).orderBy('name').execute();
    return rows.map((r) => r.name);
  }

  /**
   * Creates or updates a customer's spec. Declarative: fields absent from `desired` take their
   * defaults, except write-only secrets, which keep their stored value when not given (a
   * manifest read back from the API has no secret values to send).
   */
  async apply(desired: DesiredCustomer, options: ApplyOptions = {}): Promise<ApplyResult> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.#applyOnce(desired, options);
      } catch (error) {
        // Two writers creating the same new name: the loser's SELECT ... FOR UPDATE saw no row
        // to lock. The row exists now, so a second pass locks it and updates (or no-ops).
        if (attempt < 3 && isUniqueViolation(error, 'customers_pkey')) continue;
        throw error;
      }
    }
  }

  async #applyOnce(desired: DesiredCustomer, options: ApplyOptions): Promise<ApplyResult> {
    try {
      return await this.#db.transaction().execute(async (trx) => {
        const existing = await trx
          .selectFrom('customers')
          .selectAll()
          .where('name', '=', desired.name)
          .forUpdate()
          .executeTakeFirst();
        const live = existing && existing.deleted_at === null ? existing : undefined;
        if (options.resourceVersion !== undefined && String(live?.resource_version ?? '') !== options.resourceVersion) {
          throw new ConflictError(
            `customer ${desired.name} was modified (resourceVersion ${live?.resource_version ?? 'none'}, not ${options.resourceVersion}): read it again and retry`,
          );
        }
        const columns = this.#specColumns(desired, live);
        if (!existing) {
          const row = await trx.insertInto('customers').values(columns).returningAll().executeTakeFirstOrThrow();
          return { customer: toCustomer(row), created: true, changed: true };
        }
        if (!live) {
          // A purged customer's name is reused: start over as a new object.
          const row = await trx
            .updateTable('customers')
            .set({ ...columns, ...freshCustomerColumns() })
            .where('name', '=', desired.name)
            .returningAll()
            .executeTakeFirstOrThrow();
          return { customer: toCustomer(row), created: true, changed: true };
        }
        if (sameSpec(columns, live)) {
          return { customer: toCustomer(live), created: false, changed: false };
        }
        const row = await trx
          .updateTable('customers')
          .set(columns)
          .where('name', '=', desired.name)
          .returningAll()
          .executeTakeFirstOrThrow();
        return { customer: toCustomer(row), created: false, changed: true };
      });
    } catch (error) {
      if (isUniqueViolation(error, 'customers_live_email')) {
        throw new ConflictError(`email ${desired.spec.email} already has a live assistant`, { cause: error });
      }
      throw error;
    }
  }

  /** Sets only the desired state (suspend, resume, delete, billing). Returns false when unknown. */
  async setState(name: string, state: DesiredState): Promise<boolean> {
    const result = await this.#db
      .updateTable('customers')
      .set({ state })
      .where('name', '=', name)
      .where('deleted_at', 'is', null)
      .executeTakeFirst();
    return Number(result.numUpdatedRows) > 0;
  }

  /**
   * Writes status only when it differs from what is stored, and never over a status that
   * describes a newer generation than this one (a slow reconcile loses to a newer one).
   * Status writes do not bump `generation` and do not wake the controller.
   */
  async updateStatus(name: string, status: CustomerStatus): Promise<boolean> {
    return this.writeStatusAndEvents(name, status, []);
  }

  /**
   * What one reconcile writes, in one statement (one round trip, one transaction): its status
   * (when given, on the terms of `updateStatus`) and its events (aggregated like `recordEvent`,
   * repeats within the batch counted together). Returns whether the status was written.
   */
  async writeStatusAndEvents(name: string, status: CustomerStatus | undefined, events: readonly StoreEvent[]): Promise<boolean> {
    const batch = aggregateEvents(events);
    if (status === undefined && batch.length === 0) return false;
    const json = status === undefined ? undefined : canonicalJson(status);
    const statusUpdate =
      json === undefined
        ? sql`SELECT 1 WHERE false`
        : sql`UPDATE customers SET status = ${json}::jsonb
              WHERE name = ${name}
                AND status IS DISTINCT FROM ${json}::jsonb
                AND coalesce((status->>'observedGeneration')::bigint, 0) <= ${status?.observedGeneration ?? 0}
              RETURNING 1`;
    if (batch.length === 0) {
      const result = await sql<{ n: number }>`WITH written AS (${statusUpdate}) SELECT count(*)::int AS n FROM written`.execute(this.#db);
      return (result.rows[0]?.n ?? 0) > 0;
    }
    // The events of the batch are seen a microsecond apart, in order, so the most recent shows
    // first even when it repeats an older event (repeats keep their row, and with it their id).
    // The trim keeps the 100 most recent: the rows this statement inserts or counts again, then
    // the most recent of the others (the DELETE sees the table as it was before the upsert, one
    // snapshot per statement, and leaves the rows the upsert touches alone).
    const result = await sql<{ n: number }>`
      WITH batch AS (
        SELECT * FROM unnest(
          ${batch.map((e) => e.type)}::text[], ${batch.map((e) => e.reason)}::text[],
          ${batch.map((e) => e.message)}::text[], ${batch.map((e) => e.count)}::int[]
        ) WITH ORDINALITY AS e(type, reason, message, count, ord)
      ),
      upsert AS (
        INSERT INTO customer_events (customer, type, reason, message, count, first_seen, last_seen)
        SELECT ${name}, type, reason, message, count, now() + ord * interval '1 microsecond', now() + ord * interval '1 microsecond'
        FROM batch ORDER BY ord
        ON CONFLICT (customer, type, reason, md5(message))
        DO UPDATE SET count = customer_events.count + excluded.count, last_seen = excluded.last_seen
        RETURNING id, (xmax = 0) AS inserted
      ),
      trimmed AS (
        DELETE FROM customer_events WHERE EXISTS (SELECT 1 FROM upsert WHERE inserted) AND id IN (
          SELECT id FROM customer_events WHERE customer = ${name} AND id NOT IN (SELECT id FROM upsert)
          ORDER BY last_seen DESC, id DESC OFFSET greatest(0, ${EVENTS_KEPT_PER_CUSTOMER} - (SELECT count(*) FROM upsert))
        )
      ),
      written AS (${statusUpdate})
      SELECT count(*)::int AS n FROM written
    `.execute(this.#db);
    return (result.rows[0]?.n ?? 0) > 0;
  }

  /** Marks a torn-down, purged customer as gone; its name may be used again. */
  async markDeleted(name: string): Promise<void> {
    await this.#db.transaction().execute(async (trx) => {
      const marked = await trx
        .updateTable('customers')
        .set({ deleted_at: new Date(), stripe_customer_id: null, stripe_subscription_id: null, stripe_checkout_session_id: null })
        .where('name', '=', name)
        .where('deleted_at', 'is', null)
        .executeTakeFirst();
      // Its events and sessions go with it (like a Kubernetes object's): a customer later
      // holding the same name must not inherit them.
      if (Number(marked.numUpdatedRows) > 0) {
        await trx.deleteFrom('customer_events').where('customer', '=', name).execute();
        await trx.deleteFrom('customer_sessions').where('customer', '=', name).execute();
      }
    });
  }

  /** Records one event (repeats aggregate with a count; the 100 most recent are kept). */
  async recordEvent(name: string, event: StoreEvent): Promise<void> {
    await this.writeStatusAndEvents(name, undefined, [event]);
  }

  async listEvents(name: string, limit = 20): Promise<CustomerEvent[]> {
    const rows = await this.#db
      .selectFrom('customer_events')
      .selectAll()
      .where('customer', '=', name)
      .orderBy('last_seen', 'desc')
      .orderBy('id', 'desc')
      .limit(Math.min(limit, EVENTS_KEPT_PER_CUSTOMER))
      .execute();
    return rows.map((r) => ({
      type: r.type as EventType,
      reason: r.reason,
      message: r.message,
      count: r.count,
      firstSeen: new Date(r.first_seen),
      lastSeen: new Date(r.last_seen),
    }));
  }

  /** Decrypts the customer's secrets (for rendering their workspace; never for responses or logs). */
  async readSecrets(name: string): Promise<CustomerSecrets> {
    const row = await this.#db
      .selectFrom('customers')
      .select(['telegram_bot_token_enc', 'model_api_key_enc'])
      .where('name', '=', name)
      .executeTakeFirst();
    if (!row) throw new NotFoundError(`customer ${name} not found`);
    const secrets: CustomerSecrets = {};
    if (row.telegram_bot_token_enc) secrets.telegramBotToken = this.#box.open(row.telegram_bot_token_enc, name);
    if (row.model_api_key_enc) secrets.modelApiKey = this.#box.open(row.model_api_key_enc, name);
    return secrets;
  }

  /** The customer's gateway token: generated once, stored sealed, the same on every later call. */
  async gatewayToken(name: string): Promise<string> {
    const token = newGatewayToken();
    // One statement in the common case (no token yet). Two reconciles racing: the second UPDATE
    // waits for the first's row lock, then finds a token and writes nothing; both read it below.
    const written = await this.#db
      .updateTable('customers')
      .set({ gateway_token_enc: this.#box.seal(token, `${name}/gateway`) })
      .where('name', '=', name)
      .where('gateway_token_enc', 'is', null)
      .returning('name')
      .executeTakeFirst();
    if (written) return token;
    const row = await this.#db.selectFrom('customers').select('gateway_token_enc').where('name', '=', name).executeTakeFirst();
    if (!row) throw new NotFoundError(`customer ${name} not found`);
    if (!row.gateway_token_enc) throw new Error(`customer ${name}: gateway token missing after it was written`);
    return this.#box.open(row.gateway_token_enc, `${name}/gateway`);
  }

  /**
   * Key rotation: seals every stored secret again under the current key. Run after setting a new
   * BLYTZ_SECRET_KEY with the old one in BLYTZ_SECRET_KEY_PREVIOUS; once it reports 0 left, the
   * previous key can go. Spec generations do not change (the trigger is told it is a re-seal).
   */
  async resealAll(): Promise<{ resealed: number }> {
    let resealed = 0;
    const rows = await this.#db
      .selectFrom('customers')
      .select(['name', 'telegram_bot_token_enc', 'model_api_key_enc', 'gateway_token_enc'])
      .execute();
    for (const row of rows) {
      const columns: Array<['telegram_bot_token_enc' | 'model_api_key_enc' | 'gateway_token_enc', string]> = [
        ['telegram_bot_token_enc', row.name],
        ['model_api_key_enc', row.name],
        ['gateway_token_enc', `${row.name}/gateway`],
      ];
      const update: Record<string, string> = {};
      for (const [column, context] of columns) {
        const sealed = row[column];
        if (sealed && this.#box.sealedWithPreviousKey(sealed, context))
          update[column] = this.#box.seal(this.#box.open(sealed, context), context);
      }
      if (Object.keys(update).length === 0) continue;
      await this.#db.transaction().execute(async (trx) => {
        await sql`SELECT set_config('blytz.resealing', 'on', true)`.execute(trx);
        await trx.updateTable('customers').set(update).where('name', '=', row.name).execute();
      });
      resealed++;
    }
    return { resealed };
  }

  /**
   * Whether the customer should answer on its host (active or suspended, not deleted): Caddy's
   * on-demand TLS asks before it takes a certificate for a name.
   */
  async isReachable(name: string): Promise<boolean> {
    const row = await this.#db
      .selectFrom('customers')
      .select(sql<number>`1`.as('ok'))
      .where('name', '=', name)
      .where('deleted_at', 'is', null)
      .where('state', 'in', ['active', 'suspended'])
      .executeTakeFirst();
    return row !== undefined;
  }

  /** How many live customers are in each status phase (a customer never reconciled counts as Pending). */
  async countByPhase(): Promise<Map<string, number>> {
    const rows = await sql<{ phase: string; n: number }>`
      SELECT coalesce(status->>'phase', 'Pending') AS phase, count(*)::int AS n
      FROM customers WHERE deleted_at IS NULL GROUP BY 1
    `.execute(this.#db);
    return new Map(rows.rows.map((row) => [row.phase, row.n]));
  }

  /**
   * Every customer that should have a route right now, with its reserved port, in one query (for
   * the route sweep). Paused customers are left out: the controller leaves them alone, so their
   * routes are not compared either.
   */
  async routedCustomers(): Promise<RoutedCustomer[]> {
    const rows = await sql<{ name: string; state: RoutedCustomer['state']; port: number | null }>`
      SELECT c.name, c.state, p.port
      FROM customers c LEFT JOIN port_reservations p ON p.customer = c.name AND p.slot = 'current'
      WHERE c.deleted_at IS NULL AND NOT c.paused AND c.state IN ('active', 'suspended')
    `.execute(this.#db);
    return rows.rows.map((row) => ({ name: row.name, state: row.state, port: row.port ?? undefined }));
  }

  /**
   * What one reconcile reads from the store, its host ports and pool binding included, in one
   * query. A customer that runs something (active or suspended, not paused) and has no gateway
   * token yet gets one in this same statement (a new customer's reconcile needs it before it
   * renders anything, and a write of its own was one more transaction per new customer). It is
   * written only where none is stored, so a token never changes once written (key rotation
   * seals the same token again); it is stored before anything uses it, so a crash anywhere later
   * finds it again. Two reconciles racing: the second's update waits for the first's row lock,
   * then writes nothing; its view may then lack the token, which `gatewayToken` reads.
   */
  async reconcileView(name: string): Promise<ReconcileView | undefined> {
    const minted = this.#box.seal(newGatewayToken(), `${name}/gateway`);
    const row = await this.#customersWithBinding(
      this.#db.with('minted', (db) =>
        db
          .updateTable('customers')
          .set({ gateway_token_enc: minted })
          .where('name', '=', name)
          .where('deleted_at', 'is', null)
          .where('state', 'in', ['active', 'suspended'])
          .where('paused', '=', false)
          .where('gateway_token_enc', 'is', null)
          .returning('gateway_token_enc'),
      ),
    )
      // The statement's snapshot is taken before its own update: the minted token comes from the CTE.
      .select(sql<string | null>`coalesce(customers.gateway_token_enc, (SELECT gateway_token_enc FROM minted))`.as('token_enc'))
      .select((eb) => {
        const portIn = (slot: PortSlot) =>
          eb
            .selectFrom('port_reservations')
            .select('port')
            .whereRef('port_reservations.customer', '=', 'customers.name')
            .where('port_reservations.slot', '=', slot);
        return [portIn('current').as('current_port'), portIn('next').as('next_port')];
      })
      .where('name', '=', name)
      .where('deleted_at', 'is', null)
      .executeTakeFirst();
    if (!row) return undefined;
    const { current_port: current, next_port: next, token_enc: tokenEnc, ...customer } = row;
    customer.gateway_token_enc = tokenEnc;
    const ports: ReconcileView['ports'] = {};
    if (current !== null) ports.current = current;
    if (next !== null) ports.next = next;
    return { ...this.#toReconcileView(customer), ports };
  }

  /** Every customer's reconcile view in one query: a full resync pass reads the store once. */
  async reconcileViews(): Promise<Map<string, ReconcileView>> {
    const rows = await this.#customersWithBinding().where('deleted_at', 'is', null)
      .execute();
    return new Map(rows.map((row) => [row.name, this.#toReconcileView(row)]));
  }

  /**
   * The customer's pool slot, joined in: bound to this incarnation of the name (a name held again
   * after a purge never inherits a binding).
   */
  #customersWithBinding(from: QueryCreator<Database> = this.#db) {
    return from
      .selectFrom('customers')
      .leftJoin('pool_slots', (join) =>
        join
          .onRef('pool_slots.customer', '=', 'customers.name')
          .onRef('pool_slots.customer_uid', '=', 'customers.uid')
          .on('pool_slots.state', '=', 'bound'),
      )
      .selectAll('customers')
      .select([
        'pool_slots.id as slot_id',
        'pool_slots.spec_hash as slot_spec_hash',
        'pool_slots.own_hash as slot_own_hash',
        'pool_slots.bound_at as slot_bound_at',
        'pool_slots.applied_at as slot_applied_at',
        'pool_slots.bind_failed as slot_bind_failed',
        'pool_slots.gateway_token_enc as slot_token_enc',
      ]);
  }

  #toReconcileView(row: CustomerRow & Partial<SlotColumns>): ReconcileView {
    const secrets: CustomerSecrets = {};
    if (row.telegram_bot_token_enc) secrets.telegramBotToken = this.#box.open(row.telegram_bot_token_enc, row.name);
    if (row.model_api_key_enc) secrets.modelApiKey = this.#box.open(row.model_api_key_enc, row.name);
    const view: ReconcileView = {
      customer: toCustomer(row),
      secrets,
      gatewayToken: row.gateway_token_enc ? this.#box.open(row.gateway_token_enc, `${row.name}/gateway`) : undefined,
    };
    if (typeof row.slot_id === 'number' && row.slot_token_enc) {
      view.binding = bindingOf(
        {
          id: row.slot_id,
          spec_hash: row.slot_spec_hash ?? null,
          own_hash: row.slot_own_hash ?? null,
          bound_at: row.slot_bound_at ?? null,
          applied_at: row.slot_applied_at ?? null,
          bind_failed: row.slot_bind_failed ?? null,
          gateway_token_enc: row.slot_token_enc,
        },
        this.#box,
      );
    }
    return view;
  }

  #specColumns(desired: DesiredCustomer, live: CustomerRow | undefined): NewCustomerRow {
    const { spec } = desired;
    return {
      name: desired.name,
      email: spec.email,
      display_name: spec.displayName,
      plan: spec.plan,
      template: spec.template,
      state: spec.state,
      instructions: spec.instructions,
      telegram_bot_token_enc: this.#sealKeepingSame(spec.telegram?.botToken, live?.telegram_bot_token_enc ?? null, desired.name),
      telegram_bot_token_secret_ref: JSON.stringify(spec.telegram?.botTokenSecretRef ?? null),
      model_provider: spec.model?.provider ?? null,
      model_api_key_enc: this.#sealKeepingSame(spec.model?.apiKey, live?.model_api_key_enc ?? null, desired.name),
      model_api_key_secret_ref: JSON.stringify(spec.model?.apiKeySecretRef ?? null),
      paused: spec.paused,
      labels: JSON.stringify(desired.labels),
    };
  }

  /** A new secret value is sealed; the same value keeps its old ciphertext (so no spec change). */
  #sealKeepingSame(plaintext: string | undefined, sealed: string | null, context: string): string | null {
    if (plaintext === undefined) return sealed;
    if (sealed !== null) {
      try {
        if (this.#box.open(sealed, context) === plaintext) return sealed;
      } catch {
        // Sealed under another key or corrupt: replace it.
      }
    }
    return this.#box.seal(plaintext, context);
  }
}

/** A customer's gateway token (what its assistant's gateway answers to): 24 random bytes. */
function newGatewayToken(): string {
  return randomBytes(24).toString('base64url');
}

/** A purged name held again: a new object (new uid), nothing of the previous holder's. */
function freshCustomerColumns() {
  return {
    uid: randomUUID(),
    deleted_at: null,
    created_at: new Date(),
    status: '{}',
    gateway_token_enc: null,
    stripe_subscription_event_at: null,
    billing_warning: null,
    telegram_bot_username: null,
    access_token_hash: null,
    pending_expires_at: null,
    stripe_customer_id: null,
    stripe_subscription_id: null,
    stripe_checkout_session_id: null,
    signup_client: null,
    telegram_bot_token_hash: null,
  };
}

function sameSpec(columns: NewCustomerRow, row: CustomerRow): boolean {
  const stored: NewCustomerRow = {
    name: row.name,
    email: row.email,
    display_name: row.display_name,
    plan: row.plan,
    template: row.template,
    state: row.state,
    instructions: row.instructions,
    telegram_bot_token_enc: row.telegram_bot_token_enc,
    telegram_bot_token_secret_ref: JSON.stringify(row.telegram_bot_token_secret_ref ?? null),
    model_provider: row.model_provider,
    model_api_key_enc: row.model_api_key_enc,
    model_api_key_secret_ref: JSON.stringify(row.model_api_key_secret_ref ?? null),
    paused: row.paused,
    labels: JSON.stringify(row.labels),
  };
  // JSON columns compare as values: jsonb hands keys back in its own order, not the writer's.
  const asValues = (r: NewCustomerRow) => ({
    ...r,
    labels: JSON.parse(r.labels) as unknown,
    telegram_bot_token_secret_ref: JSON.parse(r.telegram_bot_token_secret_ref ?? 'null') as unknown,
    model_api_key_secret_ref: JSON.parse(r.model_api_key_secret_ref ?? 'null') as unknown,
  });
  return canonicalJson(asValues(stored)) === canonicalJson(asValues(columns));
}

export function toCustomer(row: CustomerRow): Customer {
  const secretRef = row.telegram_bot_token_secret_ref;
  const apiKeySecretRef = row.model_api_key_secret_ref;
  const billing: Customer['billing'] = {};
  if (row.stripe_customer_id) billing.stripeCustomerId = row.stripe_customer_id;
  if (row.stripe_subscription_id) billing.stripeSubscriptionId = row.stripe_subscription_id;
  if (row.stripe_checkout_session_id) billing.stripeCheckoutSessionId = row.stripe_checkout_session_id;
  return {
    name: row.name,
    labels: row.labels,
    generation: Number(row.generation),
    resourceVersion: String(row.resource_version),
    createdAt: new Date(row.created_at),
    updatedAt: new Date(row.updated_at),
    cancelledAt: row.cancelled_at ? new Date(row.cancelled_at) : null,
    spec: {
      email: row.email,
      displayName: row.display_name,
      plan: row.plan as PlanName,
      template: row.template,
      state: row.state as DesiredState,
      instructions: row.instructions,
      telegram: {
        botTokenSet: row.telegram_bot_token_enc !== null,
        ...(secretRef ? { botTokenSecretRef: secretRef } : {}),
      },
      model: {
        ...(row.model_provider ? { provider: row.model_provider } : {}),
        apiKeySet: row.model_api_key_enc !== null,
        ...(apiKeySecretRef ? { apiKeySecretRef } : {}),
      },
      paused: row.paused,
    },
    status: row.status as CustomerStatus,
    billing,
  };
}

export type StoreTransaction = Transaction<Database>;

/** The pool slot columns a reconcile view joins in (see `#withBinding`). */
interface SlotColumns {
  slot_id: number | null;
  slot_spec_hash: string | null;
  slot_own_hash: string | null;
  slot_bound_at: Date | null;
  slot_applied_at: Date | null;
  slot_bind_failed: string | null;
  slot_token_enc: string | null;
}
