import { sql, type Kysely, type RawBuilder } from 'kysely';

/**
 * `spec.model.apiKeySecretRef`: a Customer resource names the Kubernetes Secret that holds the
 * customer's model API key, as `spec.telegram.botTokenSecretRef` names the bot token's, so the
 * key need not sit in the resource (and in etcd) in plain text. The reference is part of the
 * spec: changing it bumps the generation, so the generation trigger learns the new column.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  // JSON null, as the store writes "no reference": an SQL NULL in existing rows would make their
  // next write look like a spec change (a new generation for nothing).
  await sql`ALTER TABLE customers ADD COLUMN model_api_key_secret_ref jsonb DEFAULT 'null'::jsonb`.execute(db);
  await replaceGenerationTrigger(db, sql`, NEW.model_api_key_secret_ref`, sql`, OLD.model_api_key_secret_ref`);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await replaceGenerationTrigger(db, sql``, sql``);
  await sql`ALTER TABLE customers DROP COLUMN model_api_key_secret_ref`.execute(db);
}

/** 0001's blytz_customers_before_write, with `extraNew`/`extraOld` among the spec columns. */
async function replaceGenerationTrigger(db: Kysely<unknown>, extraNew: RawBuilder<unknown>, extraOld: RawBuilder<unknown>) {
  await sql`
    CREATE OR REPLACE FUNCTION blytz_customers_before_write() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'UPDATE' THEN
        NEW.resource_version := OLD.resource_version + 1;
        NEW.updated_at := now();
        IF OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL THEN
          -- A purged customer's name used again: a new object starts at generation 1.
          NEW.generation := 1;
        ELSIF current_setting('blytz.resealing', true) = 'on' THEN
          -- Secrets sealed again under a new key (blytz reseal): the spec itself is unchanged.
          NEW.generation := OLD.generation;
        ELSIF (NEW.email, NEW.display_name, NEW.plan, NEW.template, NEW.state, NEW.instructions,
            NEW.telegram_bot_token_enc, NEW.telegram_bot_token_secret_ref, NEW.model_provider,
            NEW.model_api_key_enc, NEW.paused, NEW.deleted_at ${extraNew})
           IS DISTINCT FROM
           (OLD.email, OLD.display_name, OLD.plan, OLD.template, OLD.state, OLD.instructions,
            OLD.telegram_bot_token_enc, OLD.telegram_bot_token_secret_ref, OLD.model_provider,
            OLD.model_api_key_enc, OLD.paused, OLD.deleted_at ${extraOld}) THEN
          NEW.generation := OLD.generation + 1;
        ELSE
          NEW.generation := OLD.generation;
        END IF;
        IF NEW.state = 'cancelled' AND OLD.state <> 'cancelled' THEN
          NEW.cancelled_at := now();
        ELSIF NEW.state <> 'cancelled' THEN
          NEW.cancelled_at := NULL;
        END IF;
      ELSE
        NEW.generation := 1;
        NEW.resource_version := 1;
        IF NEW.state = 'cancelled' THEN NEW.cancelled_at := now(); END IF;
      END IF;
      RETURN NEW;
    END $$
  `.execute(db);
}
