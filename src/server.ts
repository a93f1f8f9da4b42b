import type { AddressInfo } from 'node:net';
import type { Server as HttpServer } from 'node:http';
import { rm } from 'node:fs/promises';
import { hostname, totalmem } from 'node:os';
import { join } from 'node:path';
import { RecordsBackupGate } from './backup/backup-gate.js';
import { BackupReconciler } from './backup/backup-reconciler.js';
import { FolderStateSource } from './backup/folder-state.js';
import { PodStateSource } from './backup/pod-state.js';
import type { CustomerStateSource } from './backup/state-source.js';
import { isTransientS3 } from './backup/s3-storage.js';
import { selectArchiveStorage } from './backup/select-storage.js';
import { StripeCheckout } from './billing/checkout.js';
import { StripePriceCatalog } from './billing/price-catalog.js';
import { createStripeClient } from './billing/stripe-client.js';
import { localUrl, TELEGRAM_API_DEFAULT, type Config } from './config.js';
import { Controller, type Reconciler } from './controller/controller.js';
import type { EventSource } from './controller/event-source.js';
import { pairingApprover, pairingTimeoutMs } from './controller/customer/pairing.js';
import { CUSTOMER_CONTROLLER_NAME, CustomerReconciler } from './controller/customer/reconciler.js';
import type { DesiredDefaults } from './controller/customer/desired.js';
import { PoolBinder } from './controller/customer/pool-binding.js';
import { POOL_CONTROLLER_NAME, PoolReconciler, POOLS_KEY } from './controller/pool/reconciler.js';
import { PoolReadiness } from './controller/pool/readiness.js';
import { checkCapacity } from './domain/capacity.js';
import { PLANS } from './domain/customer.js';
import { customerFromHost, publicOrigins, publicPortOf } from './domain/naming.js';
import { desiredRoutes } from './controller/customer/desired-routes.js';
import { WorldCache } from './controller/customer/observe.js';
import type { Leadership } from './controller/leadership.js';
import { parseMaxUnavailable } from './controller/rollout/gate.js';
import { Rollouts } from './controller/rollout/rollouts.js';
import { changeFeedSource } from './controller/change-feed-source.js';
import { ensurePrivateDir, loadAdminToken, loadSecretKey, parsePreviousKeys } from './data-dir.js';
import { adminApiRouter, type IntegrationCheck } from './http/admin-api.js';
import { StatusError } from './http/api-status.js';
import { createHttpApp } from './http/app.js';
import { createHttpServer } from './http/http-server.js';
import { createCaddyAskRouter } from './http/caddy-ask.js';
import { createModelUsageRouter } from './http/model-access-api.js';
import { createPagesRouter } from './http/pages.js';
import { createExportApiRouter } from './http/export-api.js';
import { createPairingApiRouter } from './http/pairing-api.js';
import { storePoolApi } from './http/pool-api.js';
import { createPublicApiRouter } from './http/public-api.js';
import { createRateLimitBackend } from './store/rate-limit-counters.js';
import { createStripeWebhookRouter } from './http/stripe-webhook.js';
import { CustomerResourceSource } from './customer-resources/customer-source.js';
import { LeaseElector } from './kube-api/lease-elector.js';
import { HealthChecks } from './observability/health.js';
import type { Logger } from './observability/logger.js';
import { FailureLog } from './observability/failure-log.js';
import { Metrics } from './observability/metrics.js';
import { ModelAccess } from './models/model-access.js';
import { isTransientCaddy } from './proxy/caddy/admin-client.js';
import { CaddyRouteTable } from './proxy/caddy/caddy-route-table.js';
import { reportSweep, RouteSweep, type SweepableRouteTable } from './proxy/caddy/route-sweep.js';
import { IngressRouteTable } from './proxy/ingress/ingress-route-table.js';
import { OwnedObjectsWatch } from './kube-api/owned-objects-watch.js';
import type { RouteTable } from './proxy/route-table.js';
import { dependencyOf } from './resilience/guard.js';
import { Policies } from './resilience/policies.js';
import { readTenantFirewall, tenantFirewallCheck, TenantFirewallWatch } from './runtime/docker/tenant-firewall.js';
import { kubeTarget, selectRuntime, type KubeTarget } from './runtime/select-runtime.js';
import { BackupRecords, RestoreInProgressError } from './store/backup-records.js';
import { BillingStore } from './store/billing-store.js';
import { createChangeFeed } from './store/change-feed.js';
import { CustomerStore } from './store/customer-store.js';
import { openDatabase, pingDatabase } from './store/database.js';
import { migrateOrThrow } from './store/migrate.js';
import { PostgresLeaderElector } from './store/leader-elector.js';
import { PoolStore } from './store/pool-store.js';
import { PortReservations } from './store/port-reservations.js';
import { RolloutStore } from './store/rollout-store.js';
import { SecretBox } from './store/secret-box.js';
import { TelegramClient } from './telegram/telegram-client.js';

/**
 * The composition root: config arrives parsed; every part is built once here, started in order
 * and stopped in reverse. `blytz serve` is this plus signal handling. Nothing else in the code
 * knows the real adapter classes.
 */
export interface RunningServer {
  url: string;
  stop(): Promise<void>;
}

const LEASE_NAME = 'blytz-controller';
const PHASE_GAUGE_INTERVAL_MS = 15_000;
/** The failure streak of route sweeps that fail for a reason other than a dependency (the store). */
const ROUTE_SWEEP = 'route sweep';
/** The pool controller looks at the pools this often besides its wakes (a size set on a standby, a slot's container dying). */
const POOL_RESYNC_SECONDS = 5;
/** Why pools show no slots on Kubernetes, and why a size there is refused. */
const POOLS_DOCKER_ONLY = 'warm pools run on the Docker runtime only in this version (BLYTZ_RUNTIME=kubernetes here): the size must be 0';
/** The backup controller looks at every customer this often (schedules; a standby's API requests). */
const BACKUP_RESYNC_SECONDS = 60;
/** How often `blytz serve` on Docker reads the host's tenant firewall again (someone may flush it). */
const TENANT_FIREWALL_INTERVAL_MS = 5 * 60_000;
/**
 * Owner of restored state folders: the uid:gid the customer containers run as (the templates'
 * `user`). Only root can give files away; a developer running as that user owns them anyway.
 */
const CUSTOMER_OWNER = process.getuid?.() === 0 ? { uid: 1000, gid: 1000 } : undefined;
/** Where the templates mount the customer's state in the assistant container (their `mountPath`). */
const STATE_MOUNT_PATH = '/home/node/.openclaw';

export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
  ensurePrivateDir(config.BLYTZ_DATA_DIR);
  const secretKey = loadSecretKey(config.BLYTZ_DATA_DIR, config.BLYTZ_SECRET_KEY);
  const previousKeys = parsePreviousKeys(config.BLYTZ_SECRET_KEY_PREVIOUS);
  const secretBox = new SecretBox(secretKey, previousKeys);
  const adminToken = loadAdminToken(config.BLYTZ_DATA_DIR, config.BLYTZ_ADMIN_TOKEN);

  const database = await openDatabase({ databaseUrl: config.DATABASE_URL, dataDir: config.BLYTZ_DATA_DIR });
  // Stopped in reverse order of starting.
  const stoppers: Array<() => Promise<void>> = [() => database.close()];
  const stopAll = async () => {
    for (const stop of stoppers) await stop().catch((error: unknown) => logger.warn({ err: error }, 'error while stopping'));
  };
  try {
    const applied = await migrateOrThrow(database);
    if (applied.length > 0) logger.info({ applied }, 'database migrated');

    const metrics = new Metrics();
    // A dependency that stays down is reported once, then at growing intervals, then once back.
    const failureLog = new FailureLog(logger);
    const policies = new Policies({
      metrics,
      logger,
      failureLog,
      overrides: { caddy: { isTransient: isTransientCaddy }, backup: { isTransient: isTransientS3 } },
    });
    const store = new CustomerStore(database, secretBox);
    const ports = new PortReservations(database, config.BLYTZ_PORT_RANGE);
    // The cluster, loaded once and only when something runs on or reads from Kubernetes.
    let kube: KubeTarget | undefined;
    const cluster = () => (kube ??= kubeTarget(config));

    // BLYTZ_RUNTIME: where customers run (see runtime/select-runtime.ts).
    const selected = selectRuntime(config, { policies, logger, kube: cluster });
    const { runtime, workspaces } = selected;
    // Where signup's status links and Checkout's return addresses point. Unset: this server's own
    // address, so the links work under `make run`; behind a proxy set BLYTZ_PUBLIC_URL.
    const publicUrl = (config.BLYTZ_PUBLIC_URL ?? localUrl(config.HOST, config.PORT)).replace(/\/+$/, '');
    // BLYTZ_ROUTES: Caddy's admin API, or one Ingress per customer beside its Service.
    const ingresses =
      config.BLYTZ_ROUTES === 'ingress'
        ? new IngressRouteTable({
            kubeConfig: cluster().kubeConfig,
            namespace: cluster().namespace,
            guard: policies.guard('kubernetes'),
            ...(config.BLYTZ_INGRESS_CLASS ? { ingressClassName: config.BLYTZ_INGRESS_CLASS } : {}),
            ...(config.BLYTZ_INSTANCE ? { extraLabels: { 'cloud.blytz.instance': config.BLYTZ_INSTANCE } } : {}),
          })
        : undefined;
    const caddyRoutes = ingresses
      ? undefined
      : new CaddyRouteTable({
          adminUrl: config.CADDY_ADMIN_URL,
          serverName: config.BLYTZ_CADDY_SERVER,
          listen: config.BLYTZ_CADDY_LISTEN,
          guard: policies.guard('caddy'),
          ...(config.BLYTZ_CADDY_TLS
            ? { tls: { askUrl: `http://127.0.0.1:${config.PORT}/api/caddy/ask`, baseDomain: config.BLYTZ_BASE_DOMAIN } }
            : {}),
        });
    const routes: RouteTable & SweepableRouteTable = (ingresses ?? caddyRoutes) as RouteTable & SweepableRouteTable;
    // The port customer hosts are served on; Ingresses are served on the ingress controller's standard ports.
    const publicPort = caddyRoutes
      ? publicPortOf(config.BLYTZ_CADDY_LISTEN, config.BLYTZ_PUBLIC_SCHEME, config.BLYTZ_CADDY_TLS)
      : undefined;

    // Backups (src/backup/): records in the store, archives in BLYTZ_BACKUP_URL, its own controller.
    const backupRecords = new BackupRecords(database);
    const archiveStorage = selectArchiveStorage(config, policies.guard('backup'));
    // Bound once the backup controller exists.
    let wakeBackups: (name: string) => void = () => {};
    const backupGate = new RecordsBackupGate({
      records: backupRecords,
      backupBeforePurge: config.BLYTZ_RUNTIME === 'docker',
      wakeBackups: (name) => wakeBackups(name),
      storeProblem: () =>
        policies.policy('backup').state === 'open'
          ? `the backup store ${archiveStorage.description} is failing (circuit breaker open); retrying`
          : undefined,
    });

    const cache = new WorldCache();
    const rollouts = new Rollouts({
      records: new RolloutStore(database),
      store,
      settings: {
        maxUnavailable: parseMaxUnavailable(config.BLYTZ_ROLLOUT_MAX_UNAVAILABLE),
        maxFailures: config.BLYTZ_ROLLOUT_MAX_FAILURES,
        startTimeoutSeconds: config.BLYTZ_ROLLOUT_START_TIMEOUT_SECONDS,
      },
      imagePresent: (image) => selected.imagePresent(image),
      metrics,
      logger: logger.child({ component: 'rollout' }),
    });
    // Bound once the controller exists: a freed rollout slot wakes the customers waiting for one.
    let wake: (name: string) => void = () => {};
    const defaults: DesiredDefaults = {
      baseDomain: config.BLYTZ_BASE_DOMAIN,
      customerImage: config.BLYTZ_CUSTOMER_IMAGE,
      containerPort: config.BLYTZ_CONTAINER_PORT,
      publicOrigins: (host) => publicOrigins(host, config.BLYTZ_PUBLIC_SCHEME, publicPort),
      trustedProxies: config.BLYTZ_ASSISTANT_TRUSTED_PROXIES ?? (await selected.defaultTrustedProxies()),
      telegramApiRoot: config.TELEGRAM_API_BASE === TELEGRAM_API_DEFAULT ? undefined : config.TELEGRAM_API_BASE,
    };
    // Warm pools (Docker): the size per plan in the store, the slots kept by their own controller,
    // a new customer bound to a ready one by the customer controller. Bound once it exists.
    const poolStore = new PoolStore(database, secretBox, ports);
    const poolReadiness = new PoolReadiness();
    let wakePools: () => void = () => {};
    const poolBinder = selected.pools
      ? new PoolBinder({
          pools: poolStore,
          runtime: selected.pools.runtime,
          folders: selected.pools.folders,
          workspaces,
          readiness: poolReadiness,
          metrics,
          logger: logger.child({ controller: CUSTOMER_CONTROLLER_NAME }),
          onClaimed: () => wakePools(),
          now: Date.now,
        })
      : undefined;
    const reconciler = new CustomerReconciler({
      store,
      ports,
      runtime,
      routes,
      workspaces,
      // Built below with the HTTP side; the controller starts only after it exists.
      modelAccess: (name) => models.configFor(name),
      metrics,
      logger: logger.child({ controller: CUSTOMER_CONTROLLER_NAME }),
      defaults,
      ...(poolBinder ? { pool: poolBinder } : {}),
      publicScheme: config.BLYTZ_PUBLIC_SCHEME,
      // Ingresses are served on the ingress controller's standard ports.
      publicPort,
      retentionMs: config.BLYTZ_RETENTION_DAYS * 86_400_000,
      cache,
      rollouts,
      backups: backupGate,
      onRolloutProgress: () => {
        void rollouts
          .waitingCustomers(64)
          .then((names) => names.forEach((name) => wake(name)))
          .catch((error: unknown) => logger.warn({ err: error }, 'could not list customers waiting for a rollout'));
      },
    });

    const feed = createChangeFeed(database, logger);
    const sources: EventSource[] = [
      // A customer's spec change also wakes the backup controller (a new customer's first
      // backup, a plan's other schedule) instead of waiting for its resync.
      alsoWaking(changeFeedSource(feed), (name) => wakeBackups(name)),
      new RouteSweep({
          table: routes,
          desiredRoutes: async () =>
            desiredRoutes(await store.routedCustomers(), config.BLYTZ_BASE_DOMAIN, (customer, port) =>
              runtime.upstream(customer, port),
            ),
          intervalMs: config.BLYTZ_ROUTE_SWEEP_SECONDS * 1000,
          onError: (error) => failureLog.failure(dependencyOf(error) ?? ROUTE_SWEEP, 'route sweep failed', error),
          onSuccess: () => failureLog.success(ROUTE_SWEEP),
          onSweep: (result) => reportSweep(result, metrics, logger),
        }),
      // The runtime's own hints (the Docker event stream, or the watch on our Kubernetes objects).
      ...selected.sources,
    ];
    // An Ingress edited or deleted behind our back is repaired within a reconcile, as the
    // runtime's own objects are, not only at the next route sweep.
    if (ingresses) {
      const watch = new OwnedObjectsWatch({ kubeConfig: cluster().kubeConfig, ...ingresses.ownedKinds(), logger });
      sources.push(watch);
    }

    // Only one replica reconciles. On Postgres the replicas share it: a session advisory lock.
    // On Kubernetes without Postgres: a coordination.k8s.io Lease. Otherwise (PGlite, Docker)
    // there is one process and it always leads.
    const onKubernetes = config.BLYTZ_RUNTIME === 'kubernetes' || config.BLYTZ_SOURCE === 'kubernetes';
    const elector: (Leadership & { start(): Promise<void>; stop(): Promise<void> }) | undefined =
      database.kind === 'postgres'
        ? new PostgresLeaderElector({ name: LEASE_NAME, handle: database, logger, metrics })
        : onKubernetes
          ? new LeaseElector({
              kubeConfig: cluster().kubeConfig,
              namespace: cluster().namespace,
              name: LEASE_NAME,
              identity: `${hostname()}_${process.pid}`,
              logger: logger.child({ component: 'lease' }),
              metrics,
            })
          : undefined;
    if (!elector) metrics.leaderStatus.set({ name: LEASE_NAME }, 1);

    // BLYTZ_SOURCE=kubernetes: Customer resources are mirrored into the store (whose change feed
    // wakes the controller) and their status written back; only the leader writes.
    const customerResources =
      config.BLYTZ_SOURCE === 'kubernetes'
        ? new CustomerResourceSource({
            kubeConfig: cluster().kubeConfig,
            namespace: cluster().namespace,
            store,
            guard: policies.guard('kubernetes'),
            logger: logger.child({ component: 'customer-resources' }),
            leadership: elector,
          })
        : undefined;
    if (customerResources) sources.push(customerResources);

    const controller = new Controller({
      name: CUSTOMER_CONTROLLER_NAME,
      reconciler: customerResources
        ? withResourceStatus(reconciler, (name) =>
            customerResources
              .syncStatus(name)
              .catch((error: unknown) => logger.warn({ err: error, customer: name }, 'writing Customer resource status failed')),
          )
        : reconciler,
      workers: config.BLYTZ_WORKERS,
      resyncSeconds: config.BLYTZ_RESYNC_SECONDS,
      sources,
      ...(elector ? { leadership: elector } : {}),
      metrics,
      logger,
      failureLog,
    });
    wake = (name) => controller.enqueue(name);

    // The backup controller: its own queue and workers (an upload never holds up a reconcile),
    // leading together with the customer controller.
    const backupWorkDir = join(config.BLYTZ_DATA_DIR, 'backup-work');
    // The customers' state: a folder on this host (Docker), or a claim read through the pod (and
    // written through a restore pod).
    const stateSource: CustomerStateSource =
      config.BLYTZ_RUNTIME === 'docker'
        ? new FolderStateSource({
            customersDir: join(config.BLYTZ_DATA_DIR, 'customers'),
            workDir: backupWorkDir,
            owner: CUSTOMER_OWNER,
          })
        : new PodStateSource({
            runtime,
            workDir: backupWorkDir,
            mountPath: STATE_MOUNT_PATH,
            restorePods: selected.restorePods,
          });
    const backupReconciler = new BackupReconciler({
      records: backupRecords,
      store,
      storage: archiveStorage,
      state: stateSource,
      runtime,
      keys: { current: secretKey, all: [secretKey, ...previousKeys] },
      workDir: backupWorkDir,
      policyOverrides: { scheduleSeconds: config.BLYTZ_BACKUP_SCHEDULE_SECONDS, keep: config.BLYTZ_BACKUP_KEEP },
      metrics,
      logger: logger.child({ controller: 'backup' }),
      wakeCustomer: (name) => wake(name),
    });
    const backupController = new Controller({
      name: 'backup',
      reconciler: {
        reconcile: (name, signal) => backupReconciler.reconcile(name, signal),
        listKeys: () => backupReconciler.listKeys(() => store.listNames()),
      },
      workers: config.BLYTZ_BACKUP_WORKERS,
      resyncSeconds: BACKUP_RESYNC_SECONDS,
      // A whole archive of a large state folder through a slow store.
      reconcileTimeoutMs: 60 * 60_000,
      ...(elector ? { leadership: elector } : {}),
      metrics,
      logger,
    });
    wakeBackups = (name) => backupController.enqueue(name);

    // On Docker, tenant isolation is the host's nftables table: read it (start, every few
    // minutes, and for `blytz doctor`), never assume it.
    const tenantFirewall =
      config.BLYTZ_RUNTIME === 'docker'
        ? new TenantFirewallWatch({ read: () => readTenantFirewall(), logger, metrics })
        : undefined;
    // The pool controller: one key, every pool; leading with the customer controller.
    const poolController = selected.pools
      ? new Controller({
          name: POOL_CONTROLLER_NAME,
          reconciler: new PoolReconciler({
            pools: poolStore,
            runtime: selected.pools.runtime,
            workspaces: selected.pools.workspaces,
            defaults,
            readiness: poolReadiness,
            metrics,
            logger: logger.child({ controller: POOL_CONTROLLER_NAME }),
          }),
          workers: 1,
          resyncSeconds: POOL_RESYNC_SECONDS,
          ...(elector ? { leadership: elector } : {}),
          metrics,
          logger,
          failureLog,
        })
      : undefined;
    wakePools = () => poolController?.enqueue(POOLS_KEY);

    const health = new HealthChecks();
    health.add('database', () => pingDatabase(database));
    health.add(selected.healthName, () => runtime.ping());
    health.add(config.BLYTZ_ROUTES === 'ingress' ? 'ingress' : 'caddy', () => routes.ping());

    const rateLimits = createRateLimitBackend(database);
    const billing = new BillingStore(database, secretBox, { maxCustomers: config.BLYTZ_MAX_CUSTOMERS });
    // Stripe's client when a secret key is set (model overage meter events need no price); the
    // checkout and the landing page's price need the price too.
    const stripeClient = config.STRIPE_SECRET_KEY
      ? createStripeClient({ secretKey: config.STRIPE_SECRET_KEY, apiBase: config.STRIPE_API_BASE })
      : undefined;
    const stripe = stripeClient && config.STRIPE_PRICE_ID ? { client: stripeClient, priceId: config.STRIPE_PRICE_ID } : undefined;
    const checkout = stripe
      ? new StripeCheckout({ stripe: stripe.client, priceId: stripe.priceId, publicUrl, guard: policies.guard('stripe') })
      : undefined;
    // The landing page's price, from the same Price the checkout charges.
    const pricing = stripe
      ? new StripePriceCatalog({ stripe: stripe.client, priceId: stripe.priceId, guard: policies.guard('stripe') })
      : undefined;

    if (checkout && !config.BLYTZ_PUBLIC_URL) {
      logger.warn(
        { publicUrl },
        `BLYTZ_PUBLIC_URL is unset: signup's status links and Stripe's return addresses point at ${publicUrl}, which only this machine reaches`,
      );
    }

    // Included model access (issue 23): the model gateway on its own listener, usage, rotation.
    const models = new ModelAccess(config, {
      database,
      secretBox,
      customers: store,
      policies,
      metrics,
      logger,
      addresses: selected.addresses,
      stripe: stripeClient,
    });
    await models.start();
    stoppers.unshift(() => models.stop());

    const app = createHttpApp({
      logger,
      metrics,
      health,
      readiness: { breakers: () => policies.states(), leader: () => elector?.isLeader() ?? true },
      trustProxy: config.BLYTZ_TRUST_PROXY,
      routers: [
        createPublicApiRouter({
          store: billing,
          telegram: new TelegramClient({ apiBase: config.TELEGRAM_API_BASE, guard: policies.guard('telegram') }),
          checkout,
          includedModels: models.included,
          rateLimits,
          publicUrl,
          logger,
        }),
        createStripeWebhookRouter({ ledger: billing, webhookSecret: config.STRIPE_WEBHOOK_SECRET, rateLimits, metrics, logger }),
        createCaddyAskRouter({
          isReachableHost: async (host) => {
            const name = customerFromHost(host, config.BLYTZ_BASE_DOMAIN);
            return name !== undefined && (await store.isReachable(name));
          },
        }),
        createPairingApiRouter({
          verifySession: (name, token) => billing.verifySession(name, token),
          approvePairing: pairingApprover(runtime, {
            timeoutMs: async (name) => pairingTimeoutMs(PLANS[(await store.get(name))?.spec.plan ?? 'personal']),
          }),
          rateLimits,
          logger,
        }),
        createModelUsageRouter({
          verifySession: (name, token) => billing.verifySession(name, token),
          usage: (name) => models.usage(name),
        }),
        createExportApiRouter({
          verifySession: (name, token) => billing.verifySession(name, token),
          exportState: async (name) => {
            if (!(await stateSource.exists(name))) return undefined;
            ensurePrivateDir(backupWorkDir);
            const file = join(backupWorkDir, `export-${name}-${process.pid}-${Date.now()}.tar.zst`);
            const cleanup = () => rm(file, { force: true });
            try {
              const written = await stateSource.archive(name, {
                key: secretKey,
                context: `blytz export customer=${name}`,
                outFile: file,
                meta: { customer: name, kind: 'export' },
                sealed: false,
              });
              return { file, sizeBytes: written.sizeBytes, cleanup };
            } catch (error) {
              await cleanup();
              throw error;
            }
          },
          rateLimits,
          logger,
        }),
        createPagesRouter({ pricing, includedModels: models.included }),
        adminApiRouter({
          store,
          adminToken,
          includedModels: models.included,
          rateLimits,
          reconcileNow: (name) => controller.reconcileNow(name),
          config,
          checks: async () => {
            const checks: IntegrationCheck[] = [];
            if (caddyRoutes) {
              const { ok, message } = await caddyRoutes.checkServer();
              checks.push({ name: 'caddy-server', status: ok ? 'ok' : 'fail', message });
            }
            if (tenantFirewall) checks.push(tenantFirewallCheck(await tenantFirewall.check()));
            return checks;
          },
          modelAccess: {
            usage: (name) => models.usage(name),
            // Rendered into the customer's openclaw.json by a reconcile, asked for now.
            rotate: (name) => models.rotate(name, (customer) => controller.reconcileNow(customer)),
          },
          backups: {
            list: (customer) => backupRecords.list(customer),
            get: (id) => backupRecords.get(id),
            create: async (customer) => {
              if (!(await store.get(customer))) return undefined;
              const backup = await backupRecords.request(customer, 'manual');
              wakeBackups(customer);
              return backup;
            },
            restores: (customer) => backupRecords.listRestores(customer),
            getRestore: (id) => backupRecords.getRestore(id),
            restore: async (id, customer) => {
              const backup = await backupRecords.get(id);
              if (backup?.state !== 'succeeded')
                throw new StatusError(
                  409,
                  'Conflict',
                  `backup ${id} is ${backup?.state ?? 'missing'}: only a succeeded backup can be restored`,
                );
              if (!(await store.get(customer)))
                throw new StatusError(
                  404,
                  'NotFound',
                  `customer ${customer} not found: create it first (blytz apply), then restore into it`,
                );
              try {
                const restore = await backupRecords.requestRestore(id, customer);
                wakeBackups(customer);
                wake(customer);
                return restore;
              } catch (error) {
                if (error instanceof RestoreInProgressError) throw new StatusError(409, 'Conflict', error.message);
                throw error;
              }
            },
          },
          pools: storePoolApi(poolStore, { onChange: () => wakePools(), unavailable: selected.pools ? undefined : POOLS_DOCKER_ONLY }),
          rollouts: {
            list: () => rollouts.list(),
            act: async (action, options) => {
              const affected = await (action === 'pause'
                ? rollouts.pause()
                : action === 'resume'
                  ? rollouts.resume()
                  : rollouts.undo());
              // Undo with the state: each customer sent back also gets its pre-update backup back
              // (a rollback restore, which waits for the rollout to send the customer back).
              if (action === 'undo' && options?.restoreState) {
                for (const update of await backupRecords.undoneUpdates())
                  await backupGate.restoreBeforeUpdate(update.customer, update.fromHash, update.toHash);
              }
              // Every customer is looked at again: the held ones may go now, undone ones go back.
              if (affected > 0) controller.resync(`rollout ${action}`);
              return affected;
            },
          },
        }),
      ],
    });
    // Header and body timeouts, enforced at their values (see http/http-server.ts).
    const http = createHttpServer(app);
    await listen(http, config.PORT, config.HOST);
    stoppers.unshift(() => closeHttp(http));

    if (elector) {
      await elector.start();
      stoppers.unshift(() => elector.stop());
    }
    await controller.start();
    stoppers.unshift(() => controller.stop());
    await backupController.start();
    stoppers.unshift(() => backupController.stop());
    if (poolController) {
      await poolController.start();
      stoppers.unshift(() => poolController.stop());
    }

    const phaseTimer = setInterval(() => void updatePhaseGauge(store, metrics).catch(() => {}), PHASE_GAUGE_INTERVAL_MS);
    phaseTimer.unref();
    void updatePhaseGauge(store, metrics).catch(() => {});
    const rolloutTimer = setInterval(() => void rollouts.refreshMetrics().catch(() => {}), PHASE_GAUGE_INTERVAL_MS);
    rolloutTimer.unref();
    void rollouts.refreshMetrics().catch(() => {});
    stoppers.unshift(async () => clearInterval(rolloutTimer));
    stoppers.unshift(async () => clearInterval(phaseTimer));

    const address = http.address() as AddressInfo;
    const url = localUrl(config.HOST, address.port);
    const leaderElection = database.kind === 'postgres' ? 'postgres' : elector ? 'kubernetes lease' : 'single process';
    logger.info(
      {
        url,
        // What the socket is bound to: 127.0.0.1 by default; 0.0.0.0 (every interface) only when HOST says so.
        listen: `${config.HOST}:${address.port}`,
        publicUrl,
        database: database.kind,
        dataDir: config.BLYTZ_DATA_DIR,
        leaderElection,
        runtime: selected.kind,
        source: config.BLYTZ_SOURCE,
        routes: config.BLYTZ_ROUTES,
        ...(kube ? { namespace: kube.namespace } : {}),
      },
      'blytz serving',
    );
    if (tenantFirewall) {
      // Said after "serving", so it is the last thing an operator starting blytz reads.
      await tenantFirewall.check();
      tenantFirewall.start(TENANT_FIREWALL_INTERVAL_MS);
      stoppers.unshift(async () => tenantFirewall.stop());
    }
    // Customers on this host: do the plans fit its memory? (On Kubernetes the cluster schedules.)
    if (selected.kind === 'docker') {
      const capacity = checkCapacity(config.BLYTZ_MAX_CUSTOMERS, totalmem());
      if (capacity.warning) logger.warn({ fit: capacity.fit }, capacity.warning);
    }

    let stopping: Promise<void> | undefined;
    return { url, stop: () => (stopping ??= stopAll()) };
  } catch (error) {
    await stopAll();
    throw error;
  }
}

/** The source, whose every named event also goes to `wake`. */
function alsoWaking(source: EventSource, wake: (name: string) => void): EventSource {
  return {
    start: (sink) =>
      source.start({
        enqueue: (name) => {
          sink.enqueue(name);
          wake(name);
        },
        resync: (reason) => sink.resync(reason),
      }),
    stop: () => source.stop(),
  };
}

/** After every reconcile of a customer its Customer resource shows the new status, not at the next periodic pass. */
function withResourceStatus(reconciler: Reconciler, syncStatus: (name: string) => Promise<unknown>): Reconciler {
  return {
    reconcile: async (name, signal) => {
      try {
        return await reconciler.reconcile(name, signal);
      } finally {
        await syncStatus(name);
      }
    },
    listKeys: () => reconciler.listKeys(),
    invalidate: (name) => reconciler.invalidate?.(name),
  };
}

async function updatePhaseGauge(store: CustomerStore, metrics: Metrics): Promise<void> {
  metrics.setCustomerPhases(Object.fromEntries(await store.countByPhase()));
}

function listen(server: HttpServer, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

function closeHttp(server: HttpServer): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeIdleConnections();
    // Connections still busy after the drain window are cut.
    setTimeout(() => server.closeAllConnections(), 5000).unref();
  });
}
