import { PLANS, type PlanName } from './customer.js';

/**
 * Whether BLYTZ_MAX_CUSTOMERS assistants fit the host they run on. Each plan's memory is a hard
 * limit the kernel enforces; a host that cannot hold every admitted customer at its limit will
 * OOM-kill assistants (or the control plane) under load, so the operator is told at start.
 */

/** Kept for the operating system, Caddy, Postgres and the control plane itself. */
export const HOST_RESERVE_BYTES = 2 * 1024 ** 3;

export interface CapacityReport {
  /** How many customers of each plan fit at their memory limit. */
  fit: Record<PlanName, number>;
  /** Set when BLYTZ_MAX_CUSTOMERS admits more customers than fit (on the smallest plan). */
  warning?: string;
}

const gib = (bytes: number) => `${(bytes / 1024 ** 3).toFixed(1)} GiB`;

export function checkCapacity(maxCustomers: number, hostMemoryBytes: number): CapacityReport {
  const usable = Math.max(0, hostMemoryBytes - HOST_RESERVE_BYTES);
  const fit = Object.fromEntries(
    Object.entries(PLANS).map(([plan, resources]) => [plan, Math.floor(usable / resources.memoryBytes)]),
  ) as Record<PlanName, number>;
  const smallest = (Object.keys(PLANS) as PlanName[]).reduce((a, b) => (PLANS[a].memoryBytes <= PLANS[b].memoryBytes ? a : b));
  if (maxCustomers <= fit[smallest]) return { fit };
  const perPlan = (Object.keys(PLANS) as PlanName[]).map((plan) => `${fit[plan]} on ${plan} (${gib(PLANS[plan].memoryBytes)} each)`);
  return {
    fit,
    warning:
      `BLYTZ_MAX_CUSTOMERS=${maxCustomers} admits more assistants than this host's ${gib(hostMemoryBytes)} of memory holds ` +
      `at their plans' limits (${gib(HOST_RESERVE_BYTES)} kept for the system): at most ${perPlan.join(', ')}. ` +
      `Lower BLYTZ_MAX_CUSTOMERS, add memory, or run customers on Kubernetes (BLYTZ_RUNTIME=kubernetes).`,
  };
}
