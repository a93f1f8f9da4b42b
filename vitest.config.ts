import { defineConfig } from 'vitest/config';

// Projects: unit (pure logic, no services), integration (real Postgres, Docker, Caddy), e2e (the
// built `blytz` command as a user runs it; e2e-openclaw: the same on the real OpenClaw gateway) and chaos (faults under load; it restarts its own
// Postgres and Docker engine, so `make test` runs it alone, after the other three).
export default defineConfig({
  test: {
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/integration/**/*.test.ts'],
          globalSetup: ['test/support/global-setup.ts'],
          testTimeout: 60_000,
          hookTimeout: 60_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/e2e/**/*.test.ts'],
          exclude: ['test/e2e/openclaw/**'],
          globalSetup: ['test/support/global-setup.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
      {
        // End to end on the real OpenClaw gateway (minutes each: it takes 20 to 60 s to start
        // here). A project of its own so that it runs beside the other e2e files rather than
        // after them; one file at a time, since each gateway wants most of a core while it starts.
        test: {
          name: 'e2e-openclaw',
          include: ['test/e2e/openclaw/**/*.test.ts'],
          globalSetup: ['test/support/global-setup.ts'],
          testTimeout: 120_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
      {
        test: {
          name: 'chaos',
          include: ['test/chaos/**/*.test.ts'],
          globalSetup: ['test/support/global-setup.ts'],
          testTimeout: 600_000,
          hookTimeout: 300_000,
          fileParallelism: false,
        },
      },
      {
        // Benchmarks print figures and write bench/results/*.json; run by `make bench`, not `make test`.
        test: {
          name: 'bench',
          include: ['bench/**/*.bench.ts'],
          globalSetup: ['test/support/global-setup.ts'],
          testTimeout: 900_000,
          hookTimeout: 120_000,
          fileParallelism: false,
        },
      },
    ],
  },
});
