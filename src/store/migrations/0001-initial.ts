import { sql, type Kysely } from 'kysely';

/**
 * The desired-state store. Spec columns are what writers own; a trigger bumps `generation` only
 * when one of them changes (status writes never do) and NOTIFYs the customer's name, so an
 * operator's plain `UPDATE customers SET ...` in psql wakes the controller like any API write.
 */
export async function up(db: Kysely<unknown>): Promise<void> {
  await sql`
    CREATE TABLE customers (
      name text PRIMARY KEY CHECK (name ~ '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$' AND length(name) <= 63),
      email text NOT NULL CHECK (length(email) <= 254),
      display_name text NOT NULL CHECK (length(display_name) <= 50),
      plan text NOT NULL DEFAULT 'personal',
      template text NOT NULL DEFAULT 'personal-assistant',
      state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'active', 'suspended', 'cancelled')),
      instructions text NOT NULL DEFAULT '' CHECK (length(instructions) <= 5000),
      telegram_bot_token_enc text,
      telegram_bot_token_secret_ref jsonb,
      model_provider text,
      model_api_key_enc text,
      paused boolean NOT NULL DEFAULT false,
      labels jsonb NOT NULL DEFAULT '{}',
      generation bigint NOT NULL DEFAULT 1,
      resource_version bigint NOT NULL DEFAULT 1,
      created_at timestamptz NOT NULL DEFAULT now(),
      updated_at timestamptz NOT NULL DEFAULT now(),
      cancelled_at timestamptz,
      deleted_at timestamptz,
      status jsonb NOT NULL DEFAULT '{}',
      gateway_token_enc text,
      stripe_customer_id text,
      stripe_subscription_id text,
      stripe_checkout_session_id text,
      stripe_subscription_event_at bigint,
      billing_warning text,
      telegram_bot_username text,
      access_token_hash text,
      pending_expires_at timestamptz
    )
  `.execute(db);
  await sql`CREATE UNIQUE INDEX customers_stripe_customer_id ON customers (stripe_customer_id)`.execute(db);
  await sql`CREATE UNIQUE INDEX customers_stripe_subscription_id ON customers (stripe_subscription_id)`.execute(db);
  await sql`CREATE UNIQUE INDEX customers_stripe_checkout_session_id ON customers (stripe_checkout_session_id)`.execute(db);
  // One live assistant per email; a cancelled customer's email may sign up again.
  await sql`CREATE UNIQUE INDEX customers_live_email ON customers (lower(email)) WHERE state <> 'cancelled' AND deleted_at IS NULL`.execute(db);

  await sql`
    CREATE FUNCTION blytz_customers_before_write() RETURNS trigger LANGUAGE plpgsql AS $$
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
            NEW.model_api_key_enc, NEW.paused, NEW.deleted_at)
           IS DISTINCT FROM
           (OLD.email, OLD.display_name, OLD.plan, OLD.template, OLD.state, OLD.instructions,
            OLD.telegram_bot_token_enc, OLD.telegram_bot_token_secret_ref, OLD.model_provider,
            OLD.model_api_key_enc, OLD.paused, OLD.deleted_at) THEN
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
  await sql`
    CREATE TRIGGER customers_before_write BEFORE INSERT OR UPDATE ON customers
    FOR EACH ROW EXECUTE FUNCTION blytz_customers_before_write()
  `.execute(db);

  // Only spec changes (and inserts/deletes) wake the controller: a status write must not.
  await sql`
    CREATE FUNCTION blytz_customers_notify() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('blytz_customers', OLD.name);
      ELSIF TG_OP = 'INSERT' OR NEW.generation <> OLD.generation THEN
        PERFORM pg_notify('blytz_customers', NEW.name);
      END IF;
      RETURN NULL;
    END $$
  `.execute(db);
  await sql`
    CREATE TRIGGER customers_notify AFTER INSERT OR UPDATE OR DELETE ON customers
    FOR EACH ROW EXECUTE FUNCTION blytz_customers_notify()
  `.execute(db);

  await sql`
    CREATE TABLE customer_events (
      id bigserial PRIMARY KEY,
      customer text NOT NULL,
      type text NOT NULL CHECK (type IN ('Normal', 'Warning')),
      reason text NOT NULL,
      message text NOT NULL,
      count integer NOT NULL DEFAULT 1,
      first_seen timestamptz NOT NULL DEFAULT now(),
      last_seen timestamptz NOT NULL DEFAULT now()
    )
  `.execute(db);
  // Repeated events aggregate into one row with a count, like Kubernetes Events.
  await sql`CREATE UNIQUE INDEX customer_events_identity ON customer_events (customer, type, reason, md5(message))`.execute(db);
  await sql`CREATE INDEX customer_events_recent ON customer_events (customer, last_seen DESC)`.execute(db);

  await sql`
    CREATE TABLE webhook_events (
      event_id text PRIMARY KEY,
      type text NOT NULL,
      customer text,
      outcome text NOT NULL,
      event_created bigint,
      received_at timestamptz NOT NULL DEFAULT now()
    )
  `.execute(db);

  await sql`
    CREATE TABLE port_reservations (
      port integer PRIMARY KEY CHECK (port BETWEEN 1 AND 65535),
      customer text NOT NULL UNIQUE,
      reserved_at timestamptz NOT NULL DEFAULT now()
    )
  `.execute(db);
}

export async function down(db: Kysely<unknown>): Promise<void> {
  await sql`DROP TABLE port_reservations, webhook_events, customer_events, customers`.execute(db);
  await sql`DROP FUNCTION blytz_customers_notify, blytz_customers_before_write`.execute(db);
}
