import type Docker from 'dockerode';
import { sql } from 'kysely';
import type { DatabaseHandle } from '../../src/store/database.js';
import { throughCaddy, type Served } from './blytz-serve.js';
import type { WebhookTraffic } from './chaos-webhooks.js';

/**
 * One look at everything the chaos suite promises, from the outside: the store (desired state,
 * status, port reservations, webhook ledger), the Docker engine, Caddy's config and Caddy's
 * answers. `problems` are reasons the world has not converged yet; `violations` are things that
 * must never happen at all (an acknowledged webhook missing from the ledger, a container
 * replaced although nothing about it changed).
 */

export interface WorldContext {
  database: DatabaseHandle;
  docker: Docker;
  served: Served;
  traffic: WebhookTraffic;
  names: string[];
  /** Container id per customer, recorded once it first converged; changes are violations. */
  baselineIds: Map<string, string>;
  /** Acknowledged event ids already found in the ledger (checked once each). */
  ledgerVerified: Set<string>;
}

export interface Observation {
  problems: string[];
  violations: string[];
  containerIds: Map<string, string>;
}

const ROUTE_PREFIX = 'blytz-';

export async function observeWorld(ctx: WorldContext, options: { unackedBefore: number }): Promise<Observation> {
  const problems: string[] = [];
  const violations: string[] = [];
  const { traffic } = ctx;

  const changing = traffic.changingInFlight();
  if (changing > 0) problems.push(`${changing} state-changing webhook(s) not yet acknowledged`);
  const overdue = traffic.unackedBefore(options.unackedBefore);
  if (overdue > 0) problems.push(`${overdue} webhook(s) sent before the fault ended not yet acknowledged`);

  // No webhook lost: every event the server acknowledged is in the ledger.
  const toVerify = traffic.ackedIds().filter((id) => !ctx.ledgerVerified.has(id));
  if (toVerify.length > 0) {
    const found = await sql<{ event_id: string }>`
      SELECT event_id FROM webhook_events WHERE event_id = ANY(${toVerify}::text[])
    `.execute(ctx.database.db);
    const present = new Set(found.rows.map((r) => r.event_id));
    for (const id of toVerify) {
      if (present.has(id)) ctx.ledgerVerified.add(id);
      else violations.push(`webhook ${id} was answered 200 but is not in the ledger`);
    }
  }

  const rows = await sql<{
    name: string;
    state: string;
    generation: number;
    billing_warning: string | null;
    phase: string | null;
    observed: number | null;
  }>`
    SELECT name, state, generation::int AS generation, billing_warning, status->>'phase' AS phase,
           (status->>'observedGeneration')::int AS observed
    FROM customers WHERE deleted_at IS NULL
  `.execute(ctx.database.db);
  const byName = new Map(rows.rows.map((r) => [r.name, r]));
  const ports = await sql<{ customer: string; port: number }>`SELECT customer, port FROM port_reservations`.execute(ctx.database.db);
  const portOf = new Map(ports.rows.map((r) => [r.customer, r.port]));
  const containers = await ctx.docker.listContainers({ all: true });
  // A container the engine refused to start again and again (left broken by an unclean engine
  // restart) is replaced on purpose, with a ContainerUnstartable event: not a needless recreate.
  // Read after the containers: the event is written at the end of the reconcile that replaced the
  // container, so a replacement listed above may still be without it (see below).
  const unstartable = await sql<{ customer: string }>`
    SELECT DISTINCT customer FROM customer_events WHERE reason = 'ContainerUnstartable'
  `.execute(ctx.database.db);
  const replacedOnPurpose = new Set(unstartable.rows.map((r) => r.customer));
  const containersOf = new Map<string, Docker.ContainerInfo[]>();
  for (const c of containers) {
    const customer = c.Labels['cloud.blytz.customer'];
    if (!customer || c.Labels['cloud.blytz.instance'] !== ctx.served.instance || !byName.has(customer)) {
      problems.push(`orphan container ${c.Names[0] ?? c.Id} (customer ${customer ?? 'none'})`);
      continue;
    }
    containersOf.set(customer, [...(containersOf.get(customer) ?? []), c]);
  }

  const routes = await caddyRoutes(ctx.served);
  const routesOf = new Map<string, Array<Record<string, unknown>>>();
  for (const route of routes) {
    const id = route['@id'];
    if (typeof id !== 'string' || !id.startsWith(ROUTE_PREFIX)) continue;
    const name = id.slice(ROUTE_PREFIX.length);
    routesOf.set(name, [...(routesOf.get(name) ?? []), route]);
  }
  for (const [name, list] of routesOf) {
    if (!ctx.names.includes(name)) problems.push(`orphan route blytz-${name}`);
    if (list.length > 1) problems.push(`${list.length} routes blytz-${name}`);
  }
  for (const customer of portOf.keys()) {
    if (!ctx.names.includes(customer)) problems.push(`orphan port reservation ${portOf.get(customer)} for ${customer}`);
  }

  const containerIds = new Map<string, string>();
  const recreated: string[] = [];
  await Promise.all(
    ctx.names.map(async (name) => {
      const expected = traffic.expected(name);
      const row = byName.get(name);
      const mine = containersOf.get(name) ?? [];
      const myRoutes = routesOf.get(name) ?? [];
      const port = portOf.get(name);
      const say = (what: string) => problems.push(`${name} (${expected.state}): ${what}`);
      if (!row) return say('row missing');
      if (row.state !== expected.state) say(`desired state is ${row.state}, its webhooks say ${expected.state}`);
      if (row.billing_warning !== expected.warning) say(`billing warning is ${JSON.stringify(row.billing_warning)}, webhooks say ${JSON.stringify(expected.warning)}`);
      if (row.observed !== row.generation) say(`observedGeneration ${row.observed} != generation ${row.generation}`);
      if (mine.length > 1) say(`${mine.length} containers`);
      const container = mine[0];
      if (container) {
        containerIds.set(name, container.Id);
        const baseline = ctx.baselineIds.get(name);
        if (baseline && baseline !== container.Id && replacedOnPurpose.has(name)) {
          ctx.baselineIds.set(name, container.Id);
        } else if (baseline && baseline !== container.Id) {
          // Judged below, once the rest has converged: the reconcile that replaced it on purpose
          // may not have written its event yet.
          recreated.push(`${name}: container recreated (${baseline.slice(0, 12)} -> ${container.Id.slice(0, 12)})`);
        }
      }
      const wantPhase = { active: 'Ready', suspended: 'Suspended', cancelled: 'Terminated' }[expected.state];
      if (row.phase !== wantPhase) say(`phase ${row.phase}, want ${wantPhase}`);

      if (expected.state === 'cancelled') {
        if (container) say('container still there');
        if (myRoutes.length > 0) say('route still there');
        if (port !== undefined) say(`port ${port} still reserved`);
        return;
      }
      if (port === undefined) say('no port reservation');
      if (!container) return say('no container');
      if (myRoutes.length === 0) return say('no route');
      const dial = upstreamDial(myRoutes[0] as Record<string, unknown>);
      if (expected.state === 'active') {
        if (container.State !== 'running') say(`container ${container.State}`);
        const published = container.Ports.find((p) => p.PublicPort)?.PublicPort;
        if (published !== port) say(`container publishes ${published}, reservation is ${port}`);
        if (dial !== `127.0.0.1:${port}`) say(`route dials ${dial}, reservation is ${port}`);
        const res = await throughCaddy(ctx.served, `${name}.blytz.localhost`, '/AGENTS.md').catch((e: Error) => ({ status: 0, body: e.message }));
        if (res.status !== 200) say(`through Caddy: ${res.status}`);
        else if (!res.body.includes(marker(name))) say('through Caddy: another customer answered');
      } else {
        if (container.State === 'running') say('container running');
        if (dial !== undefined) say(`route still dials ${dial}`);
        const res = await throughCaddy(ctx.served, `${name}.blytz.localhost`, '/AGENTS.md').catch((e: Error) => ({ status: 0, body: e.message }));
        if (res.status !== 503) say(`through Caddy: ${res.status}, want the suspended page (503)`);
      }
    }),
  );
  // A replaced container with no ContainerUnstartable event is a needless recreate, a violation.
  // While anything else is unsettled it is only a problem: the replacing reconcile writes its
  // event with its status, at its end, and the world is not converged before that status is.
  if (problems.length === 0) violations.push(...recreated);
  else problems.push(...recreated);
  return { problems, violations, containerIds };
}

/** Written into each customer's instructions, so a page through Caddy proves whose container answered. */
export function marker(name: string): string {
  return `chaos-marker-${name}`;
}

async function caddyRoutes(served: Served): Promise<Array<Record<string, unknown>>> {
  const res = await served.caddy.admin('/config/apps/http/servers/blytz/routes');
  if (!res.ok) {
    await res.text();
    return [];
  }
  const body = (await res.json()) as unknown;
  return Array.isArray(body) ? (body as Array<Record<string, unknown>>) : [];
}

function upstreamDial(route: Record<string, unknown>): string | undefined {
  const text = JSON.stringify(route);
  return /"dial":"([^"]+)"/.exec(text)?.[1];
}
