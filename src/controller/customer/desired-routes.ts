import { sql } from 'kysely';
import { customerHost } from '../../domain/naming.js';
import type { DesiredRoute } from '../../proxy/route-table.js';
import type { DatabaseHandle } from '../../store/database.js';
import { upstreamFor, type UpstreamOf } from './plan.js';

/**
 * The routes the store wants right now, in one query, for the Caddy route sweep: active
 * customers route to their reserved port (at the runtime's `upstreamOf`), suspended ones show the page. Paused customers are
 * left out (the controller leaves them alone, so their routes are not compared either).
 */
export async function desiredRoutes(
  database: DatabaseHandle,
  baseDomain: string,
  upstreamOf?: UpstreamOf,
): Promise<DesiredRoute[]> {
  const rows = await sql<{ name: string; state: string; port: number | null }>`
    SELECT c.name, c.state, p.port
    FROM customers c LEFT JOIN port_reservations p ON p.customer = c.name AND p.slot = 'current'
    WHERE c.deleted_at IS NULL AND NOT c.paused AND c.state IN ('active', 'suspended')
  `.execute(database.db);
  const routes: DesiredRoute[] = [];
  for (const row of rows.rows) {
    const host = customerHost(row.name, baseDomain);
    if (row.state === 'suspended') routes.push({ customer: row.name, host, target: { kind: 'suspended' } });
    else if (row.port !== null) routes.push({ customer: row.name, host, target: upstreamFor(row.port, row.name, upstreamOf) });
  }
  return routes;
}
