import { sql } from 'kysely';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createTestDatabase, type TestDatabase } from '../support/postgres.js';
import { waitFor } from '../support/wait-for.js';
import { instanceContainers, startServe, throughCaddy, type Served } from '../support/blytz-serve.js';

/**
 * A customer row written with plain SQL (as an operator in psql would) becomes a running
 * container behind its own subdomain on a real Docker engine and a real Caddy, driven by the
 * built `blytz serve` on real Postgres; suspend, resume and cancel do what they say.
 */
describe('blytz serve provisions customers end to end', () => {
  let db: TestDatabase;
  let served: Served;
  const name = `e2e-${Math.random().toString(36).slice(2, 8)}`;
  const host = () => `${name}.blytz.localhost`;

  beforeAll(async () => {
    db = await createTestDatabase();
    served = await startServe({ databaseUrl: db.url });
  });
  afterAll(async () => {
    await served?.stop();
    await db?.drop();
  });

  const phase = async () => {
    const r = await sql<{ phase: string | null }>`SELECT status->>'phase' AS phase FROM customers WHERE name = ${name}`.execute(db.handle.db);
    return r.rows[0]?.phase;
  };

  it('one SQL insert brings up a container that serves the rendered workspace through Caddy', async () => {
    await sql`
      INSERT INTO customers (name, email, display_name, state, instructions)
      VALUES (${name}, ${`${name}@example.com`}, 'Ada', 'active', ${'I am a freelance developer.\n- keep my calendar tidy'})
    `.execute(db.handle.db);
    const page = await waitFor(async () => {
      const res = await throughCaddy(served, host(), '/AGENTS.md');
      return res.status === 200 ? res.body : undefined;
    }, 60_000).catch((error: unknown) => {
      throw new Error(`${(error as Error).message}\n${served.log().slice(-3000)}`);
    });
    expect(page).toContain('keep my calendar tidy');
    await waitFor(async () => (await phase()) === 'Ready', 30_000).catch(async (error: unknown) => {
      const r = await sql<{ status: unknown }>`SELECT status FROM customers WHERE name = ${name}`.execute(db.handle.db);
      throw new Error(`${(error as Error).message}\nstatus: ${JSON.stringify(r.rows[0]?.status)}\n${served.log().slice(-3000)}`);
    });

    const [container] = await instanceContainers(served.instance, name);
    expect(container?.State).toBe('running');
    expect(container?.Labels['cloud.blytz.managed-by']).toBe('blytz');
    expect(container?.Ports.every((p) => !p.IP || p.IP === '127.0.0.1')).toBe(true);
  });

  it('an instruction change in psql re-renders in place without recreating the container', async () => {
    const [before] = await instanceContainers(served.instance, name);
    await sql`UPDATE customers SET instructions = ${'I now run a bakery.\n- order flour'} WHERE name = ${name}`.execute(db.handle.db);
    await waitFor(async () => (await throughCaddy(served, host(), '/AGENTS.md')).body.includes('order flour'), 30_000);
    const [after] = await instanceContainers(served.instance, name);
    expect(after?.Id).toBe(before?.Id);
  });

  it('a killed container is brought back', async () => {
    const [before] = await instanceContainers(served.instance, name);
    const { docker } = await import('../support/blytz-serve.js');
    await docker.getContainer(before!.Id).kill();
    await waitFor(async () => (await throughCaddy(served, host(), '/AGENTS.md')).status === 200 && (await instanceContainers(served.instance, name))[0]?.State === 'running', 30_000);
  });

  it('a foreign container started by hand with our labels is removed', async () => {
    const { docker } = await import('../support/blytz-serve.js');
    const [ours] = await instanceContainers(served.instance, name);
    const foreign = await docker.createContainer({
      Image: 'blytz/assistant-stub:dev',
      name: `intruder-${name}`,
      Labels: { 'cloud.blytz.managed-by': 'blytz', 'cloud.blytz.customer': name, 'cloud.blytz.instance': served.instance },
    });
    await foreign.start();
    // The Docker event for it wakes the controller; only the customer's own container remains.
    await waitFor(async () => {
      const now = await instanceContainers(served.instance, name);
      return now.length === 1 && now[0]?.Id === ours?.Id;
    }, 30_000);
  });

  it('suspend shows the suspended page, resume brings the same container back', async () => {
    const [before] = await instanceContainers(served.instance, name);
    await sql`UPDATE customers SET state = 'suspended' WHERE name = ${name}`.execute(db.handle.db);
    const suspended = await waitFor(async () => {
      const res = await throughCaddy(served, host(), '/AGENTS.md');
      return res.status === 503 ? res : undefined;
    }, 30_000);
    expect(suspended.body.toLowerCase()).toContain('suspended');
    await waitFor(async () => (await instanceContainers(served.instance, name))[0]?.State === 'exited', 30_000);
    await waitFor(async () => (await phase()) === 'Suspended', 30_000);

    await sql`UPDATE customers SET state = 'active' WHERE name = ${name}`.execute(db.handle.db);
    await waitFor(async () => (await throughCaddy(served, host(), '/AGENTS.md')).status === 200, 30_000);
    const [after] = await instanceContainers(served.instance, name);
    expect(after?.Id).toBe(before?.Id);
  });

  it('cancel removes the route and the container, keeps the workspace', async () => {
    await sql`UPDATE customers SET state = 'cancelled' WHERE name = ${name}`.execute(db.handle.db);
    await waitFor(async () => (await phase()) === 'Terminated', 30_000);
    expect(await instanceContainers(served.instance, name)).toEqual([]);
    // Caddy's fallback route answers for hosts that belong to no customer.
    const res = await throughCaddy(served, host(), '/AGENTS.md');
    expect(res.status).toBe(404);
    const ports = await sql<{ n: number }>`SELECT count(*)::int AS n FROM port_reservations WHERE customer = ${name}`.execute(db.handle.db);
    expect(ports.rows[0]?.n).toBe(0);
    const { existsSync } = await import('node:fs');
    expect(existsSync(`${served.dataDir}/customers/${name}/workspace/AGENTS.md`)).toBe(true);
  });
});
