import { createHash } from 'node:crypto';
import { containerName, CUSTOMER_LABEL, isDns1123Label, MANAGED_BY_LABEL, MANAGED_BY_VALUE } from '../domain/naming.js';

/**
 * The name and labels every Kubernetes object of a customer carries: the runtime's (Deployment,
 * Service, Secret, PVC, NetworkPolicy) and the Ingress route table's. Here, below both, so
 * neither adapter imports the other.
 *
 * Names: all of a customer's objects share one.
 *
 * Contract section 5 says `blytz-<name>`. A Service name must be a DNS-1035 label of at most 63
 * characters, and a customer name may itself be 63 long, so `blytz-<name>` can be 69. Those
 * names keep the prefix, are cut to leave room, and end in `-<8 hex of sha256(name)>`: still
 * unique per customer, stable, and recognisable. Code never parses the customer back out of an
 * object name: the `cloud.blytz.customer` label is the source of truth (its value is the full
 * name; label values may be 63 characters too).
 */

export const MAX_OBJECT_NAME = 63;

export function objectName(customer: string): string {
  if (!isDns1123Label(customer)) throw new Error(`customer name ${JSON.stringify(customer)} is not a DNS-1123 label`);
  const full = containerName(customer);
  if (full.length <= MAX_OBJECT_NAME) return full;
  const suffix = `-${createHash('sha256').update(customer).digest('hex').slice(0, 8)}`;
  return `${full.slice(0, MAX_OBJECT_NAME - suffix.length).replace(/-+$/, '')}${suffix}`;
}

/** The in-cluster address of a customer's Service: what Caddy (or an Ingress) dials. */
export function serviceDial(customer: string, namespace: string, port: number): string {
  return `${objectName(customer)}.${namespace}.svc:${port}`;
}

/** The contract's marks (`cloud.blytz.managed-by=blytz`, `cloud.blytz.customer=<name>`) over BLYTZ_INSTANCE's labels. */
export function baseLabels(customer: string, extraLabels: Record<string, string>): Record<string, string> {
  return { ...extraLabels, [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, [CUSTOMER_LABEL]: customer };
}
