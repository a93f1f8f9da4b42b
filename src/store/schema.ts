import type { ColumnType, Generated, Insertable, Selectable, Updateable } from 'kysely';

/** Kysely's view of the tables made by `migrations/`. */
export interface Database {
  customers: CustomersTable;
  customer_events: CustomerEventsTable;
  webhook_events: WebhookEventsTable;
  port_reservations: PortReservationsTable;
  model_credentials: ModelCredentialsTable;
  model_usage: ModelUsageTable;
  model_requests: ModelRequestsTable;
  customer_sessions: CustomerSessionsTable;
  pools: PoolsTable;
  pool_slots: PoolSlotsTable;
}

// Columns with a database default are optional on insert.
type Timestamp = ColumnType<Date, Date | string | undefined, Date | string>;
type NullableTimestamp = ColumnType<Date | null, Date | string | null | undefined, Date | string | null>;
type Json<T> = ColumnType<T, string, string>;
type BigIntNumber = ColumnType<number, number | undefined, number>;

export interface CustomersTable {
  name: string;
  // Desired state (the spec): changing any of these bumps `generation` and notifies.
  email: string;
  display_name: string;
  plan: string;
  template: string;
  state: string;
  instructions: string;
  telegram_bot_token_enc: string | null;
  telegram_bot_token_secret_ref: Json<{ name: string; key: string } | null> | null;
  model_provider: string | null;
  model_api_key_enc: string | null;
  model_api_key_secret_ref: Json<{ name: string; key: string } | null> | null;
  paused: boolean;
  // Metadata.
  labels: Json<Record<string, string>>;
  generation: BigIntNumber;
  resource_version: BigIntNumber;
  created_at: Timestamp;
  updated_at: Timestamp;
  cancelled_at: NullableTimestamp;
  deleted_at: NullableTimestamp;
  // Owned by the controller.
  status: ColumnType<Record<string, unknown>, string | undefined, string>;
  gateway_token_enc: string | null;
  // Owned by billing and signup.
  stripe_customer_id: string | null;
  stripe_subscription_id: string | null;
  stripe_checkout_session_id: string | null;
  stripe_subscription_event_at: BigIntNumber | null;
  billing_warning: string | null;
  telegram_bot_username: string | null;
  access_token_hash: string | null;
  pending_expires_at: NullableTimestamp;
  /** One incarnation of the name (migration 0006): a new holder of a name gets a new uid. */
  uid: ColumnType<string, string | undefined, string>;
  /** The client (IP, IPv6 /64) that started a signup, and the hash of its bot token. */
  signup_client: string | null;
  telegram_bot_token_hash: string | null;
}

/** Sessions a customer opened with their single-use access token (migration 0006). */
export interface CustomerSessionsTable {
  token_hash: string;
  customer: string;
  customer_uid: string;
  created_at: Timestamp;
  expires_at: Timestamp;
}

export interface CustomerEventsTable {
  id: BigIntNumber;
  customer: string;
  type: string;
  reason: string;
  message: string;
  count: Generated<number>;
  first_seen: Timestamp;
  last_seen: Timestamp;
}

export interface WebhookEventsTable {
  event_id: string;
  type: string;
  customer: string | null;
  outcome: string;
  received_at: Timestamp;
  event_created: BigIntNumber | null;
}

export interface PortReservationsTable {
  port: number;
  customer: string;
  /**
   * `current`: the port the customer is served on; `next`: the port of a blue-green update's new
   * container; `pool`: a warm pool slot's (customer `pool_<id>`), handed over as `current` by a claim.
   */
  slot: ColumnType<'current' | 'next' | 'pool', 'current' | 'next' | 'pool' | undefined, 'current' | 'next' | 'pool'>;
  reserved_at: Timestamp;
}

/** Migration 0008: included model access (see migrations/0008-model-access.ts). */
export interface ModelCredentialsTable {
  customer: string;
  secret_hash: string;
  secret_enc: string;
  created_at: Timestamp;
}

/** `period` is a Postgres date, read back as a string (`YYYY-MM-01`) by both drivers' type parsers. */
export interface ModelUsageTable {
  customer: string;
  period: ColumnType<string, string, string>;
  requests: BigIntNumber;
  input_tokens: BigIntNumber;
  cached_input_tokens: BigIntNumber;
  output_tokens: BigIntNumber;
  updated_at: Timestamp;
}

export interface ModelRequestsTable {
  id: string;
  customer: string;
  period: ColumnType<string, string, string>;
  api: string;
  model: string;
  input_tokens: number;
  cached_input_tokens: number;
  output_tokens: number;
  overage_tokens: BigIntNumber;
  recorded_at: Timestamp;
  stripe_report: string | null;
}

/** Migration 0009: warm pools (see migrations/0009-pools.ts). */
export interface PoolsTable {
  plan: string;
  size: number;
  template: string;
  generation: BigIntNumber;
  created_at: Timestamp;
  updated_at: Timestamp;
}

export interface PoolSlotsTable {
  id: Generated<number>;
  plan: string;
  template: string;
  state: 'warming' | 'ready' | 'retiring' | 'bound';
  fingerprint: string;
  gateway_token_enc: string;
  customer: string | null;
  customer_uid: string | null;
  spec_hash: string | null;
  own_hash: string | null;
  created_at: Timestamp;
  ready_at: NullableTimestamp;
  bound_at: NullableTimestamp;
  applied_at: NullableTimestamp;
  bind_failed: string | null;
}

export type CustomerRow = Selectable<CustomersTable>;
export type NewCustomerRow = Insertable<CustomersTable>;
export type CustomerRowUpdate = Updateable<CustomersTable>;
