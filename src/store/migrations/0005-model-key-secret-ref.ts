import { sql, type Kysely } from 'kysely';

/**
 * `spec.model.apiKeySecretRef`: a Customer resource names the Kubernetes Secret that holds the
 * customer's model API key, as `spec.telegram.botTokenSecretRef` names the bot token's, so the
 * key need not sit in the resource (and in etcd) in plain text.
 *
 * The reference is part of the spec: changing it bumps the generation. Rather than restate 0001's
 * generation trigger with one more column, a second BEFORE UPDATE trigger runs after it (triggers
 * fire in name order) and counts a changed reference when nothing else already did.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  // JSON null, as the store writes "no reference": an SQL NULL in existing rows would make their
  // next write look like a spec change (a new generation for nothing).
  await sql`ALTER TABLE customers ADD COLUMN model_api_key_secret_ref jsonb DEFAULT 'null'::jsonb`.execute(db);
  await sql`
    CREATE FUNCTION blytz_customers_model_key_ref_generation() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF NEW.model_api_key_secret_ref IS DISTINCT FROM OLD.model_api_key_secret_ref
         AND NEW.generation = OLD.generation
         AND NOT (OLD.deleted_at IS NOT NULL AND NEW.deleted_at IS NULL)
         AND current_setting('blytz.resealing', true) IS DISTINCT FROM 'on' THEN
        NEW.generation := OLD.generation + 1;
      END IF;
      RETURN NEW;
    END $$
  `.execute(db);
  await sql`
    CREATE TRIGGER customers_before_write_model_key_ref BEFORE UPDATE ON customers
    FOR EACH ROW EXECUTE FUNCTION blytz_customers_model_key_ref_generation()
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TRIGGER customers_before_write_model_key_ref ON customers`.execute(db);
  await sql`DROP FUNCTION blytz_customers_model_key_ref_generation`.execute(db);
  await sql`ALTER TABLE customers DROP COLUMN model_api_key_secret_ref`.execute(db);
}
