import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { PHASES } from '../domain/customer.js';

/**
 * Every metric of contract section 6 on one registry (not prom-client's global one, so tests
 * and two servers in one process never collide). controller-runtime's names where the meaning
 * is the same, so its dashboards work.
 */
export class Metrics {
  readonly registry = new Registry();

  readonly reconcileTotal = new Counter({
    name: 'controller_runtime_reconcile_total',
    help: 'Total number of reconciliations per controller and result',
    labelNames: ['controller', 'result'] as const,
    registers: [this.registry],
  });
  readonly reconcileErrors = new Counter({
    name: 'controller_runtime_reconcile_errors_total',
    help: 'Total number of reconciliation errors per controller',
    labelNames: ['controller'] as const,
    registers: [this.registry],
  });
  readonly reconcileTime = new Histogram({
    name: 'controller_runtime_reconcile_time_seconds',
    help: 'Length of time per reconciliation per controller',
    labelNames: ['controller'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly activeWorkers = new Gauge({
    name: 'controller_runtime_active_workers',
    help: 'Number of currently used workers per controller',
    labelNames: ['controller'] as const,
    registers: [this.registry],
  });
  readonly maxConcurrentReconciles = new Gauge({
    name: 'controller_runtime_max_concurrent_reconciles',
    help: 'Maximum number of concurrent reconciles per controller',
    labelNames: ['controller'] as const,
    registers: [this.registry],
  });
  readonly workqueueDepth = new Gauge({
    name: 'workqueue_depth',
    help: 'Current depth of workqueue',
    labelNames: ['name'] as const,
    registers: [this.registry],
  });
  readonly workqueueAdds = new Counter({
    name: 'workqueue_adds_total',
    help: 'Total number of adds handled by workqueue',
    labelNames: ['name'] as const,
    registers: [this.registry],
  });
  readonly workqueueQueueDuration = new Histogram({
    name: 'workqueue_queue_duration_seconds',
    help: 'How long in seconds an item stays in workqueue before being requested',
    labelNames: ['name'] as const,
    buckets: [1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1, 10, 100, 1000],
    registers: [this.registry],
  });
  readonly workqueueWorkDuration = new Histogram({
    name: 'workqueue_work_duration_seconds',
    help: 'How long in seconds processing an item from workqueue takes',
    labelNames: ['name'] as const,
    buckets: [1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1, 10, 100, 1000],
    registers: [this.registry],
  });
  readonly workqueueRetries = new Counter({
    name: 'workqueue_retries_total',
    help: 'Total number of retries handled by workqueue',
    labelNames: ['name'] as const,
    registers: [this.registry],
  });
  readonly workqueueUnfinishedWork = new Gauge({
    name: 'workqueue_unfinished_work_seconds',
    help: 'How many seconds of work has been done that is in progress and has not been observed by work_duration',
    labelNames: ['name'] as const,
    registers: [this.registry],
  });
  readonly workqueueLongestRunning = new Gauge({
    name: 'workqueue_longest_running_processor_seconds',
    help: 'How many seconds has the longest running processor for workqueue been running',
    labelNames: ['name'] as const,
    registers: [this.registry],
  });
  readonly leaderStatus = new Gauge({
    name: 'leader_election_master_status',
    help: 'Gauge of if the reporting system is master of the relevant lease, 0 indicates backup, 1 indicates master',
    labelNames: ['name'] as const,
    registers: [this.registry],
  });
  readonly customers = new Gauge({
    name: 'blytz_customers',
    help: 'Customers by status phase',
    labelNames: ['phase'] as const,
    registers: [this.registry],
  });
  /**
   * Sets blytz_customers from counts by phase: every phase of the Customer object gets a sample,
   * 0 when no customer is in it; a phase outside the list (a newer server's, in a shared
   * database) is kept as counted.
   */
  setCustomerPhases(counts: Record<string, number>): void {
    this.customers.reset();
    for (const phase of PHASES) this.customers.set({ phase }, counts[phase] ?? 0);
    for (const [phase, n] of Object.entries(counts))
      if (!(PHASES as readonly string[]).includes(phase)) this.customers.set({ phase }, n);
  }

  readonly driftCorrections = new Counter({
    name: 'blytz_drift_corrections_total',
    help: 'Differences between the world and the desired state that the controller corrected, by kind',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly breakerState = new Gauge({
    name: 'blytz_circuit_breaker_state',
    help: 'Circuit breaker state per dependency: 0 closed, 1 half-open, 2 open',
    labelNames: ['dependency'] as const,
    registers: [this.registry],
  });
  readonly externalCallDuration = new Histogram({
    name: 'blytz_external_call_duration_seconds',
    help: 'Duration of calls to external dependencies',
    labelNames: ['dependency', 'operation', 'outcome'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  });
  readonly stripeWebhookEvents = new Counter({
    name: 'blytz_stripe_webhook_events_total',
    help: 'Stripe webhook events received, by type and outcome',
    labelNames: ['type', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly provisionDuration = new Histogram({
    name: 'blytz_provision_duration_seconds',
    help: 'Time from a customer becoming active to its first Ready status',
    buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300],
    registers: [this.registry],
  });
  readonly rolloutCustomers = new Gauge({
    name: 'blytz_rollout_customers',
    help: 'Customers in the current fleet rollouts by state (waiting, in_progress, done, failed, rolled_back)',
    labelNames: ['state'] as const,
    registers: [this.registry],
  });
  readonly rolloutPaused = new Gauge({
    name: 'blytz_rollout_paused',
    help: 'Current fleet rollouts that are paused, by reason (failures, image_missing, operator)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });
  // Included model access (issue 23): the model gateway and metering.
  readonly modelRequests = new Counter({
    name: 'blytz_model_requests_total',
    help: 'Requests to the model gateway by API and outcome (ok, provider_error, quota_exceeded, unauthorized, wrong_source, refused, unavailable, usage_missing, unrecorded)',
    labelNames: ['api', 'outcome'] as const,
    registers: [this.registry],
  });
  readonly modelTokens = new Counter({
    name: 'blytz_model_tokens_total',
    help: "Tokens metered from the providers' usage fields, by API and kind (input, cached_input, output)",
    labelNames: ['api', 'kind'] as const,
    registers: [this.registry],
  });
  readonly modelInFlight = new Gauge({
    name: 'blytz_model_requests_in_flight',
    help: 'Model gateway requests being answered (streams open), by API',
    labelNames: ['api'] as const,
    registers: [this.registry],
  });
  readonly modelPeriodTokens = new Gauge({
    name: 'blytz_model_period_tokens',
    help: 'Tokens (input + output) each customer used this month through the model gateway',
    labelNames: ['customer', 'plan'] as const,
    registers: [this.registry],
  });
  readonly modelBudgetTokens = new Gauge({
    name: 'blytz_model_budget_tokens',
    help: "Each plan's monthly model budget: tokens included, and the ceiling past which requests are refused",
    labelNames: ['plan', 'limit'] as const,
    registers: [this.registry],
  });
  readonly stripeMeterEvents = new Counter({
    name: 'blytz_stripe_meter_events_total',
    help: 'Model overage reported to Stripe as meter events, by outcome (sent, skipped, failed)',
    labelNames: ['outcome'] as const,
    registers: [this.registry],
  });
  readonly tenantFirewall = new Gauge({
    name: 'blytz_tenant_firewall',
    help: "The host's tenant firewall (nftables table inet blytz_tenants) on Docker: 1 for the state found (loaded, missing, incomplete, unknown)",
    labelNames: ['state'] as const,
    registers: [this.registry],
  });
  readonly backupLastSuccess = new Gauge({
    name: 'blytz_backup_last_success_timestamp_seconds',
    help: "When the customer's newest good backup finished (Unix seconds)",
    labelNames: ['customer'] as const,
    registers: [this.registry],
  });
  readonly backupScheduleSeconds = new Gauge({
    name: 'blytz_backup_schedule_seconds',
    help: "The customer's backup schedule from its plan (seconds between scheduled backups; 0: none)",
    labelNames: ['customer'] as const,
    registers: [this.registry],
  });
  readonly backupDuration = new Histogram({
    name: 'blytz_backup_duration_seconds',
    help: 'Time to take a backup or do a restore, by operation (backup, restore) and outcome (success, failure)',
    labelNames: ['operation', 'outcome'] as const,
    buckets: [0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800],
    registers: [this.registry],
  });
  readonly backupBytes = new Histogram({
    name: 'blytz_backup_size_bytes',
    help: 'Size of the backup archives stored (encrypted, compressed)',
    buckets: [1e5, 1e6, 1e7, 1e8, 5e8, 1e9, 5e9],
    registers: [this.registry],
  });
  // Warm pools (issue 22): pre-started assistants a payment binds to.
  readonly poolSize = new Gauge({
    name: 'blytz_pool_size',
    help: "Each plan's desired warm pool size (ready, unassigned assistants)",
    labelNames: ['plan'] as const,
    registers: [this.registry],
  });
  readonly poolSlots = new Gauge({
    name: 'blytz_pool_slots',
    help: 'Warm pool slots by plan and state (warming, ready, retiring, bound: claimed, still on the slot\'s container)',
    labelNames: ['plan', 'state'] as const,
    registers: [this.registry],
  });
  readonly assistantStarts = new Counter({
    name: 'blytz_assistant_starts_total',
    help: "New customers' first assistants by plan and source (pool: bound to a warm pool slot; cold: a container started for them)",
    labelNames: ['plan', 'source'] as const,
    registers: [this.registry],
  });
  readonly poolBindDuration = new Histogram({
    name: 'blytz_pool_bind_duration_seconds',
    help: "Time from a warm pool claim to the slot's gateway answering with the customer's configuration in force",
    buckets: [0.25, 0.5, 1, 2, 3, 5, 10, 20, 30, 60, 120],
    registers: [this.registry],
  });
  readonly httpRequestDuration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP request latency by method, route and status code',
    labelNames: ['method', 'route', 'status_code'] as const,
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });

  constructor(options: { defaultMetrics?: boolean } = {}) {
    // Every phase from the start, zeros included: a dashboard or an alert on
    // blytz_customers{phase="Failed"} sees 0 rather than no data.
    this.setCustomerPhases({});
    if (options.defaultMetrics ?? true) {
      collectDefaultMetrics({ register: this.registry });
      // Gauges named *_total are rejected by `promtool check metrics`.
      for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
        this.registry.removeSingleMetric(name);
      }
    }
  }
}
