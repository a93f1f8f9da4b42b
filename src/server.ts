import type { AddressInfo } from 'node:net';
import { createServer, type Server as HttpServer } from 'node:http';
import { sql } from 'kysely';
import type { Config } from './config.js';
import { ensureDataDir, loadAdminToken, loadSecretKey } from './data-dir.js';
import { createHttpApp } from './http/app.js';
import { HealthChecks } from './observability/health.js';
import type { Logger } from './observability/logger.js';
import { Metrics } from './observability/metrics.js';
import { CustomerStore } from './store/customer-store.js';
import { openDatabase, type DatabaseHandle } from './store/database.js';
import { migrateOrThrow } from './store/migrate.js';
import { PortReservations } from './store/port-reservations.js';
import { SecretBox } from './store/secret-box.js';

/**
 * The composition root: parses nothing itself (config arrives parsed), builds every part once,
 * starts them in order and stops them in reverse. `blytz serve` is this plus signal handling.
 */
export interface RunningServer {
  url: string;
  stop(): Promise<void>;
}

export async function startServer(config: Config, logger: Logger): Promise<RunningServer> {
  ensureDataDir(config.BLYTZ_DATA_DIR);
  const secretBox = new SecretBox(loadSecretKey(config.BLYTZ_DATA_DIR, config.BLYTZ_SECRET_KEY));
  const adminToken = loadAdminToken(config.BLYTZ_DATA_DIR, config.BLYTZ_ADMIN_TOKEN);
  void adminToken; // used by the admin API

  const database = await openDatabase({ databaseUrl: config.DATABASE_URL, dataDir: config.BLYTZ_DATA_DIR });
  const stoppers: Array<() => Promise<void>> = [() => database.close()];
  try {
    const applied = await migrateOrThrow(database);
    if (applied.length > 0) logger.info({ applied }, 'database migrated');

    const metrics = new Metrics();
    const store = new CustomerStore(database, secretBox);
    const ports = new PortReservations(database, config.BLYTZ_PORT_RANGE);
    void store;
    void ports;

    const health = new HealthChecks();
    health.add('database', () => pingDatabase(database));

    const isLeader = database.kind === 'pglite';
    metrics.leaderStatus.set({ name: 'blytz-controller' }, isLeader ? 1 : 0);

    const app = createHttpApp({
      logger,
      metrics,
      health,
      readiness: { breakers: () => ({}), leader: () => isLeader },
      trustProxy: config.BLYTZ_TRUST_PROXY,
    });
    const http = createServer(app);
    // Slow or stuck clients cannot hold sockets forever.
    http.requestTimeout = 30_000;
    http.headersTimeout = 10_000;
    http.keepAliveTimeout = 5_000;
    await listen(http, config.PORT, config.HOST);
    stoppers.unshift(() => closeHttp(http));
    const address = http.address() as AddressInfo;
    const host = config.HOST === '0.0.0.0' || config.HOST === '::' ? '127.0.0.1' : config.HOST;
    const url = `http://${host}:${address.port}`;
    logger.info({ url, database: database.kind, dataDir: config.BLYTZ_DATA_DIR }, 'blytz serving');

    let stopping: Promise<void> | undefined;
    return {
      url,
      stop: () => {
        stopping ??= (async () => {
          for (const stop of stoppers) {
            await stop().catch((error: unknown) => logger.warn({ err: error }, 'error while stopping'));
          }
        })();
        return stopping;
      },
    };
  } catch (error) {
    for (const stop of stoppers) await stop().catch(() => {});
    throw error;
  }
}

async function pingDatabase(database: DatabaseHandle): Promise<void> {
  await sql`SELECT 1`.execute(database.db);
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
