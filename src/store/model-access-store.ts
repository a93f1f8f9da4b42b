import { sql, type Kysely, type Transaction } from 'kysely';
import type { OverageLedger, ReportOutcome, UnreportedOverage } from '../billing/meter-events.js';
import { overageOf, type ModelBudget } from '../domain/model-budget.js';
import { credentialHash, newCredential } from './model-credential.js';
import type { ModelApi, Usage } from '../model-providers/usage.js';
import type { DatabaseHandle } from './database.js';
import type { Database } from './schema.js';
import type { SecretBox } from './secret-box.js';

/**
 * Included model access in the store (migration 0008): customers' model credentials, their usage
 * per month, and the ledger that makes metering exactly-once and feeds Stripe's meter events.
 */

/** A credential accepted by the gateway: whose it is, and what it may still spend. */
export interface ModelCaller {
  customer: string;
  plan: string;
  stripeCustomerId: string | null;
  /** Tokens (input + output) already counted in the period asked about. */
  usedTokens: number;
}

/** One metered provider answer. `id` is the gateway's request id: recording it twice counts once. */
export interface MeteredRequest {
  id: string;
  customer: string;
  /** `YYYY-MM-01` (domain/model-budget.ts, periodKey). */
  period: string;
  api: ModelApi;
  model: string;
  usage: Usage;
}

export interface UsageSummary {
  period: string;
  requests: number;
  inputTokens: number;
  cachedInputTokens: number;
  outputTokens: number;
}

function sealContext(customer: string): string {
  return `${customer}/model-credential`;
}

export class ModelAccessStore implements OverageLedger {
  readonly #db: Kysely<Database>;
  readonly #box: SecretBox;

  constructor(database: DatabaseHandle, box: SecretBox) {
    this.#db = database.db;
    this.#box = box;
  }

  /**
   * The customer's credential, issued on first use: what the controller renders into its
   * openclaw.json. Undefined when no such live customer exists (or it is cancelled: a cancelled
   * customer gets none, and the trigger of migration 0008 removed the one it had).
   */
  async ensureCredential(customer: string): Promise<string | undefined> {
    const existing = await this.#sealed(customer);
    if (existing) return this.#box.open(existing, sealContext(customer));
    const credential = newCredential();
    // Insert-if-absent: two reconciles racing keep the first one's credential.
    await sql`
      INSERT INTO model_credentials (customer, secret_hash, secret_enc)
      SELECT name, ${credentialHash(credential)}, ${this.#box.seal(credential, sealContext(customer))}
      FROM customers WHERE name = ${customer} AND deleted_at IS NULL AND state <> 'cancelled'
      ON CONFLICT (customer) DO NOTHING
    `.execute(this.#db);
    const sealed = await this.#sealed(customer);
    return sealed ? this.#box.open(sealed, sealContext(customer)) : undefined;
  }

  /** A new credential at once; the old one stops working in the same statement. Undefined: no such live customer. */
  async rotateCredential(customer: string): Promise<string | undefined> {
    const credential = newCredential();
    const result = await sql`
      INSERT INTO model_credentials (customer, secret_hash, secret_enc)
      SELECT name, ${credentialHash(credential)}, ${this.#box.seal(credential, sealContext(customer))}
      FROM customers WHERE name = ${customer} AND deleted_at IS NULL AND state <> 'cancelled'
      ON CONFLICT (customer) DO UPDATE
        SET secret_hash = excluded.secret_hash, secret_enc = excluded.secret_enc, created_at = now()
    `.execute(this.#db);
    return Number(result.numAffectedRows ?? 0) > 0 ? credential : undefined;
  }

  async revokeCredential(customer: string): Promise<boolean> {
    const result = await this.#db.deleteFrom('model_credentials').where('customer', '=', customer).executeTakeFirst();
    return Number(result.numDeletedRows) > 0;
  }

  /** When the customer's current credential was issued (for `describe`), never the credential. */
  async credentialIssuedAt(customer: string): Promise<Date | undefined> {
    const row = await this.#db
      .selectFrom('model_credentials')
      .select('created_at')
      .where('customer', '=', customer)
      .executeTakeFirst();
    return row ? new Date(row.created_at) : undefined;
  }

  /**
   * The gateway's one query per request: the customer a credential belongs to, if that customer
   * may use included access now (active, not deleted, no key of their own), with the tokens
   * counted so far in `period`.
   */
  async authenticate(credential: string, period: string): Promise<ModelCaller | undefined> {
    const result = await sql<{ customer: string; plan: string; stripe_customer_id: string | null; used: string | number }>`
      SELECT c.name AS customer, c.plan, c.stripe_customer_id,
             coalesce(u.input_tokens + u.output_tokens, 0) AS used
      FROM model_credentials k
      JOIN customers c ON c.name = k.customer
      LEFT JOIN model_usage u ON u.customer = c.name AND u.period = ${period}::date
      WHERE k.secret_hash = ${credentialHash(credential)}
        AND c.state = 'active' AND c.deleted_at IS NULL
        AND c.model_api_key_enc IS NULL
        AND coalesce(c.model_api_key_secret_ref, 'null'::jsonb) = 'null'::jsonb
    `.execute(this.#db);
    const row = result.rows[0];
    if (!row) return undefined;
    return { customer: row.customer, plan: row.plan, stripeCustomerId: row.stripe_customer_id, usedTokens: Number(row.used) };
  }

  /**
   * Records one metered answer and adds it to the month's totals, in one transaction. Keyed by
   * the request id: a second call for the same id (a retry after a lost commit acknowledgement)
   * changes nothing. Returns whether it was new and how many of its tokens are overage.
   */
  async record(request: MeteredRequest, budget: ModelBudget): Promise<{ recorded: boolean; overageTokens: number }> {
    const tokens = request.usage.inputTokens + request.usage.outputTokens;
    // A plan without overage needs nothing but the one statement (atomic on its own): no
    // transaction round trips on the path every answer takes.
    if (budget.overageCeiling === undefined) {
      return { recorded: (await addUsage(this.#db, request)) !== undefined, overageTokens: 0 };
    }
    return this.#db.transaction().execute(async (trx) => {
      const total = await addUsage(trx, request);
      if (total === undefined) return { recorded: false, overageTokens: 0 };
      // The totals row was locked by the upsert, so `total - tokens` is exactly what came before.
      const overageTokens = overageOf(budget, total - tokens, tokens);
      if (overageTokens > 0) {
        await trx.updateTable('model_requests').set({ overage_tokens: overageTokens }).where('id', '=', request.id).execute();
      }
      return { recorded: true, overageTokens };
    });
  }

  async usage(customer: string, period: string): Promise<UsageSummary> {
    const row = await this.#db
      .selectFrom('model_usage')
      .select(['requests', 'input_tokens', 'cached_input_tokens', 'output_tokens'])
      .where('customer', '=', customer)
      .where(sql<boolean>`period = ${period}::date`)
      .executeTakeFirst();
    return {
      period,
      requests: Number(row?.requests ?? 0),
      inputTokens: Number(row?.input_tokens ?? 0),
      cachedInputTokens: Number(row?.cached_input_tokens ?? 0),
      outputTokens: Number(row?.output_tokens ?? 0),
    };
  }

  /** Tokens (input + output) per customer with any use in `period`, plan included (for metrics). */
  async totalsFor(period: string): Promise<Array<{ customer: string; plan: string; tokens: number }>> {
    const result = await sql<{ customer: string; plan: string; tokens: string | number }>`
      SELECT u.customer, c.plan, u.input_tokens + u.output_tokens AS tokens
      FROM model_usage u JOIN customers c ON c.name = u.customer
      WHERE u.period = ${period}::date AND c.deleted_at IS NULL
    `.execute(this.#db);
    return result.rows.map((r) => ({ customer: r.customer, plan: r.plan, tokens: Number(r.tokens) }));
  }

  /**
   * Hands up to `limit` requests with unreported overage to `report`, locked (SKIP LOCKED: two
   * replicas never take the same ones), and stores each outcome it returns, in one transaction.
   * A crash before the commit leaves them unreported: they are sent again with the same
   * identifier, which Stripe deduplicates.
   */
  async reportOverage(
    limit: number,
    report: (rows: UnreportedOverage[]) => Promise<Map<string, ReportOutcome>>,
  ): Promise<{ sent: number; skipped: number; left: number }> {
    return this.#db.transaction().execute(async (trx) => {
      const result = await sql<{
        id: string;
        customer: string;
        stripe_customer_id: string | null;
        overage_tokens: string | number;
        recorded_at: Date;
      }>`
        SELECT r.id, r.customer, c.stripe_customer_id, r.overage_tokens, r.recorded_at
        FROM model_requests r JOIN customers c ON c.name = r.customer
        WHERE r.overage_tokens > 0 AND r.stripe_report IS NULL
        ORDER BY r.recorded_at
        LIMIT ${limit}
        FOR UPDATE OF r SKIP LOCKED
      `.execute(trx);
      const rows = result.rows.map((r) => ({
        id: r.id,
        customer: r.customer,
        stripeCustomerId: r.stripe_customer_id,
        overageTokens: Number(r.overage_tokens),
        recordedAt: new Date(r.recorded_at),
      }));
      if (rows.length === 0) return { sent: 0, skipped: 0, left: 0 };
      const outcomes = await report(rows);
      let sent = 0;
      let skipped = 0;
      for (const [id, outcome] of outcomes) {
        await setReport(trx, id, outcome);
        if (outcome === 'sent') sent++;
        else skipped++;
      }
      return { sent, skipped, left: rows.length - outcomes.size };
    });
  }

  /** Drops ledger rows older than `before` that Stripe no longer needs (reported, or nothing to report). */
  async pruneLedger(before: Date): Promise<number> {
    const result = await this.#db
      .deleteFrom('model_requests')
      .where('recorded_at', '<', before)
      .where((eb) => eb.or([eb('overage_tokens', '=', 0), eb('stripe_report', 'is not', null)]))
      .executeTakeFirst();
    return Number(result.numDeletedRows);
  }

  /** Key rotation (`blytz reseal`): credentials sealed under a previous key are sealed again. */
  async resealAll(): Promise<{ resealed: number }> {
    let resealed = 0;
    const rows = await this.#db.selectFrom('model_credentials').select(['customer', 'secret_enc']).execute();
    for (const row of rows) {
      const context = sealContext(row.customer);
      if (!this.#box.sealedWithPreviousKey(row.secret_enc, context)) continue;
      const resealedValue = this.#box.seal(this.#box.open(row.secret_enc, context), context);
      await this.#db
        .updateTable('model_credentials')
        .set({ secret_enc: resealedValue })
        .where('customer', '=', row.customer)
        .where('secret_enc', '=', row.secret_enc)
        .execute();
      resealed++;
    }
    return { resealed };
  }

  async #sealed(customer: string): Promise<string | undefined> {
    const row = await this.#db
      .selectFrom('model_credentials')
      .select('secret_enc')
      .where('customer', '=', customer)
      .executeTakeFirst();
    return row?.secret_enc;
  }
}

/**
 * One statement: the ledger row (skipped if its id is already there) and, only when it was new,
 * its tokens added to the month's totals. Resolves with the new total, or undefined for a repeat.
 */
async function addUsage(db: Kysely<Database>, request: MeteredRequest): Promise<number | undefined> {
  const { usage } = request;
  const totals = await sql<{ total: string | number }>`
    WITH inserted AS (
      INSERT INTO model_requests (id, customer, period, api, model, input_tokens, cached_input_tokens, output_tokens)
      VALUES (${request.id}, ${request.customer}, ${request.period}::date, ${request.api}, ${request.model},
              ${usage.inputTokens}, ${usage.cachedInputTokens}, ${usage.outputTokens})
      ON CONFLICT (id) DO NOTHING
      RETURNING customer, period, input_tokens, cached_input_tokens, output_tokens
    )
    INSERT INTO model_usage AS u (customer, period, requests, input_tokens, cached_input_tokens, output_tokens)
    SELECT customer, period, 1, input_tokens, cached_input_tokens, output_tokens FROM inserted
    ON CONFLICT (customer, period) DO UPDATE SET
      requests = u.requests + 1,
      input_tokens = u.input_tokens + excluded.input_tokens,
      cached_input_tokens = u.cached_input_tokens + excluded.cached_input_tokens,
      output_tokens = u.output_tokens + excluded.output_tokens,
      updated_at = now()
    RETURNING u.input_tokens + u.output_tokens AS total
  `.execute(db);
  const row = totals.rows[0];
  return row ? Number(row.total) : undefined;
}

async function setReport(trx: Transaction<Database>, id: string, outcome: ReportOutcome): Promise<void> {
  await trx
    .updateTable('model_requests')
    .set({ stripe_report: outcome.slice(0, 200) })
    .where('id', '=', id)
    .execute();
}
