#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import { ConfigError, loadConfig } from '../config.js';
import { createLogger, logFormatFor } from '../observability/logger.js';
import { CliError } from './errors.js';
import { registerVerbs } from './verbs.js';

/** Exit codes: 0 ok, 1 failure, 2 usage error (contract section 1). */
export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

function buildProgram(): Command {
  const program = new Command('blytz')
    .description('Blytz Cloud control plane')
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(text) });

  program
    .command('serve')
    .description('run migrations, the HTTP API and the controller')
    .action(async () => {
      const config = loadConfig();
      const logger = createLogger({ level: config.LOG_LEVEL, format: logFormatFor(process.stdout) });
      // Loaded here, not at the top: operator verbs then start in a fraction of the time.
      const { startServer } = await import('../server.js');
      const server = await startServer(config, logger);
      let signals = 0;
      const onSignal = (signal: NodeJS.Signals) => {
        signals++;
        if (signals > 1) {
          logger.warn({ signal }, 'second signal: exiting now');
          process.exit(EXIT_FAILURE);
        }
        logger.info({ signal }, 'draining; send the signal again to exit at once');
        server.stop().then(
          () => process.exit(EXIT_OK),
          () => process.exit(EXIT_FAILURE),
        );
      };
      process.on('SIGTERM', onSignal);
      process.on('SIGINT', onSignal);
      await new Promise(() => {}); // serve until a signal
    });

  program
    .command('migrate')
    .description('apply database migrations and exit')
    .action(async () => {
      const config = loadConfig();
      const { openDatabase } = await import('../store/database.js');
      const { migrateOrThrow } = await import('../store/migrate.js');
      const database = await openDatabase({ databaseUrl: config.DATABASE_URL, dataDir: config.BLYTZ_DATA_DIR });
      try {
        const applied = await migrateOrThrow(database);
        console.log(applied.length > 0 ? `applied: ${applied.join(', ')}` : 'database is up to date');
      } finally {
        await database.close();
      }
    });

  program
    .command('reseal')
    .description('key rotation: seal every stored secret again under BLYTZ_SECRET_KEY (old keys in BLYTZ_SECRET_KEY_PREVIOUS)')
    .action(async () => {
      const config = loadConfig();
      const { openDatabase } = await import('../store/database.js');
      const { migrateOrThrow } = await import('../store/migrate.js');
      const { CustomerStore } = await import('../store/customer-store.js');
      const { ModelAccessStore } = await import('../store/model-access-store.js');
      const { SecretBox } = await import('../store/secret-box.js');
      const { loadSecretKey, parsePreviousKeys } = await import('../data-dir.js');
      const box = new SecretBox(loadSecretKey(config.BLYTZ_DATA_DIR, config.BLYTZ_SECRET_KEY), parsePreviousKeys(config.BLYTZ_SECRET_KEY_PREVIOUS));
      const database = await openDatabase({ databaseUrl: config.DATABASE_URL, dataDir: config.BLYTZ_DATA_DIR });
      try {
        await migrateOrThrow(database);
        const { resealed } = await new CustomerStore(database, box).resealAll();
        console.log(`resealed the secrets of ${resealed} customer(s) under the current key`);
        const credentials = await new ModelAccessStore(database, box).resealAll();
        console.log(`resealed ${credentials.resealed} model credential(s) under the current key`);
        const { PoolStore } = await import('../store/pool-store.js');
        const { PortReservations } = await import('../store/port-reservations.js');
        const slots = await new PoolStore(database, box, new PortReservations(database, config.BLYTZ_PORT_RANGE)).resealAll();
        console.log(`resealed ${slots} warm pool slot token(s) under the current key`);
      } finally {
        await database.close();
      }
    });

  registerVerbs(program);
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return EXIT_OK;
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.exitCode === 0) return EXIT_OK;
      return EXIT_USAGE;
    }
    if (error instanceof CliError) {
      // An empty message means the verb's own output already said it (diff, doctor).
      if (error.message) console.error(`blytz: ${error.message}`);
      return error.exitCode;
    }
    if (error instanceof ConfigError) {
      console.error(`blytz: ${error.message}`);
      return EXIT_USAGE;
    }
    console.error(`blytz: ${(error as Error).message}`);
    return EXIT_FAILURE;
  }
}

void main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
});
