import { CUSTOMER_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SPEC_HASH_LABEL } from './naming.js';

/**
 * Labels on what the runtimes make for a customer (Docker containers; Kubernetes objects and
 * the Ingresses of the route table). The first three are the contract's marks (section 5,
 * `naming.ts`); the rest let `list()` probe health and report the host port from the single
 * list call, without an inspect per container (a created, never-started container shows no
 * ports in the list).
 */
export const HOST_PORT_LABEL = 'cloud.blytz.host-port';
export const CONTAINER_PORT_LABEL = 'cloud.blytz.container-port';
/** Containers made before probes were declared: the path any answer below 500 counted as healthy on. */
export const HEALTH_PATH_LABEL = 'cloud.blytz.health-path';
/** The template's probes (compact JSON) and the start timeout in seconds, for `list()` to judge health. */
export const PROBES_LABEL = 'cloud.blytz.probes';
export const START_TIMEOUT_LABEL = 'cloud.blytz.start-timeout';
/** Fleet rollouts: the customer's own inputs' hash and generation when the container was made. */
export const OWN_HASH_LABEL = 'cloud.blytz.own-hash';
export const GENERATION_LABEL = 'cloud.blytz.generation';
/**
 * A warm pool slot's container and network carry this (the slot's id) instead of
 * `cloud.blytz.customer`: labels cannot change after creation, so a slot bound to a customer is
 * known by its name (`blytz-<name>`, set by the claim's rename) and by the binding in the store.
 */
export const POOL_SLOT_LABEL = 'cloud.blytz.pool-slot';

const RESERVED = new Set([
  MANAGED_BY_LABEL,
  CUSTOMER_LABEL,
  SPEC_HASH_LABEL,
  HOST_PORT_LABEL,
  CONTAINER_PORT_LABEL,
  HEALTH_PATH_LABEL,
  PROBES_LABEL,
  START_TIMEOUT_LABEL,
  OWN_HASH_LABEL,
  GENERATION_LABEL,
  POOL_SLOT_LABEL,
]);

/**
 * Extra labels given to a runtime (e.g. `cloud.blytz.instance=<id>`): stamped on everything it
 * creates and required by everything it lists and watches, so two controllers (or two test
 * files) on one engine never see each other's containers. They cannot replace our own marks.
 */
export function checkExtraLabels(labels: Record<string, string>): Record<string, string> {
  for (const key of Object.keys(labels)) {
    if (RESERVED.has(key)) throw new Error(`extra label ${key} would replace one of the runtime's own labels`);
  }
  return { ...labels };
}

/** The engine's label filter (`key=value` strings, all must match) for our containers. */
export function labelFilter(extraLabels: Record<string, string>, more: Record<string, string> = {}): string[] {
  return Object.entries({ [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, ...extraLabels, ...more }).map(([k, v]) => `${k}=${v}`);
}
