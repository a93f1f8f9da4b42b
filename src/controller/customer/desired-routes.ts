import { customerHost } from '../../domain/naming.js';
import type { DesiredRoute } from '../../proxy/route-table.js';
import type { RoutedCustomer } from '../../store/store.js';
import { upstreamFor, type UpstreamOf } from './plan.js';

/**
 * The routes the store wants right now, for the route sweep: active customers route to their
 * reserved port (at the runtime's `upstreamOf`), suspended ones show the page; an active
 * customer without a port yet has no route to want.
 */
export function desiredRoutes(customers: RoutedCustomer[], baseDomain: string, upstreamOf?: UpstreamOf): DesiredRoute[] {
  const routes: DesiredRoute[] = [];
  for (const { name, state, port } of customers) {
    const host = customerHost(name, baseDomain);
    if (state === 'suspended') routes.push({ customer: name, host, target: { kind: 'suspended' } });
    else if (port !== undefined) routes.push({ customer: name, host, target: upstreamFor(port, name, upstreamOf) });
  }
  return routes;
}
