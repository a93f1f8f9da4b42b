import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DockerRuntime } from '../../src/runtime/docker/docker-runtime.js';
import { unguarded } from '../../src/resilience/guard.js';
import { PLANS } from '../../src/domain/customer.js';
import { SPEC_HASH_LABEL } from '../../src/domain/naming.js';
import { docker, instanceContainers, portSlot, releasePortSlot, startServe, throughCaddy, type Served } from '../support/blytz-serve.js';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { insertActiveCustomers } from '../support/customers.js';
import { waitFor } from '../support/wait-for.js';
import { stubHealth } from '../support/fixtures.js';

/**
 * Crashes between steps leave half-done work in the world. The controller keeps no memory of
 * what it was doing, so a restart must converge from whatever it finds: no duplicate container,
 * no leaked port.
 */
describe('converges after a crash between steps', () => {
  let db: TestDatabase;
  let served: Served;
  const range = portSlot();

  beforeAll(async () => {
    db = await createTestDatabase();
    served = await startServe({ databaseUrl: db.url, portRange: range });
    // The controller is "dead" while we leave the world half done.
    await served.stopProcess({ kill: true });
  });
  afterAll(async () => {
    await served?.stop();
    releasePortSlot(range);
    await db?.drop();
  });

  const insertActive = (name: string) => insertActiveCustomers(db.handle.db, [name], { instructions: 'crash test' });

  it('after reserving the port but before creating, and after creating but before starting', async () => {
    const reservedOnly = `crash-a-${Date.now().toString(36)}`;
    const createdOnly = `crash-b-${Date.now().toString(36)}`;
    await insertActive(reservedOnly);
    await insertActive(createdOnly);
    // Crash 1: the port reservation was written, the container never created.
    await sql`INSERT INTO port_reservations (port, customer) VALUES (${range.from + 10}, ${reservedOnly})`.execute(db.handle.db);
    // Crash 2: the container was created (stale spec hash, never started) on a reserved port.
    await sql`INSERT INTO port_reservations (port, customer) VALUES (${range.from + 11}, ${createdOnly})`.execute(db.handle.db);
    const runtime = new DockerRuntime(unguarded, { docker, extraLabels: { 'cloud.blytz.instance': served.instance } });
    await runtime.create({
      customer: createdOnly,
      image: 'blytz/assistant-stub:dev',
      containerPort: 18789,
      hostPort: range.from + 11,
      user: '1000:1000',
      mounts: [],
      env: {},
      resources: PLANS.personal,
      ...stubHealth(),
      specHash: 'from-before-the-crash',
    });

    await served.restart();
    // The stale container may be started first and replaced a moment later (its spec hash is
    // outdated), so "served" alone is not converged: wait for the current spec on a running one.
    const converged = async (name: string) => {
      const containers = await instanceContainers(served.instance, name);
      const current =
        containers.length > 0 &&
        containers.every((c) => c.State === 'running' && c.Labels[SPEC_HASH_LABEL] !== 'from-before-the-crash');
      return current && (await throughCaddy(served, `${name}.blytz.localhost`, '/AGENTS.md')).status === 200;
    };
    for (const name of [reservedOnly, createdOnly]) {
      await waitFor(() => converged(name), 60_000);
      const containers = await instanceContainers(served.instance, name);
      expect(containers).toHaveLength(1);
      expect(containers[0]?.State).toBe('running');
    }
    const ports = await sql<{
      customer: string;
      port: number;
    }>`SELECT customer, port FROM port_reservations ORDER BY customer`.execute(db.handle.db);
    // One reservation per customer, nothing leaked, and each container publishes its own.
    expect(ports.rows.map((r) => r.customer)).toEqual([reservedOnly, createdOnly].sort());
    for (const { customer, port } of ports.rows) {
      const [container] = await instanceContainers(served.instance, customer);
      expect(container?.Ports.some((p) => p.PublicPort === port)).toBe(true);
    }
    // The reservation found again after the crash is the one used, unless the host had that
    // port taken by something else meanwhile (then an event says the customer moved).
    const moved = await sql<{ customer: string }>`SELECT customer FROM customer_events WHERE reason = 'PortClash'`.execute(
      db.handle.db,
    );
    const movedNames = new Set(moved.rows.map((r) => r.customer));
    if (!movedNames.has(reservedOnly)) expect(ports.rows.find((r) => r.customer === reservedOnly)?.port).toBe(range.from + 10);
  });
});
