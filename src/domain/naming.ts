import { createHash } from 'node:crypto';

/** Kubernetes' DNS-1123 label: what a customer name must be (also a subdomain label). */
export const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
export const MAX_NAME_LENGTH = 63;

export function isDns1123Label(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && DNS1123_LABEL.test(name);
}

/**
 * Derives a customer name from an email: lowercase; `@`, `.` and `/` become `-`; anything else
 * outside `[a-z0-9-]` is dropped; runs of `-` collapse; no `-` at either end; at most 63
 * characters. Path tricks (`../`) cannot survive it, so a name can never escape a folder.
 */
export function nameFromEmail(email: string): string {
  const base = email
    .toLowerCase()
    .replace(/[@./]/g, '-')
    .replace(/[^a-z0-9-]/g, '')
    .replace(/-+/g, '-')
    .replace(/^-+|-+$/g, '');
  const name = trimToLength(base, MAX_NAME_LENGTH);
  return name === '' ? `customer-${emailHash(email)}` : name;
}

/**
 * The name for an email when `nameFromEmail` is already held by a different email: the same
 * name cut short, plus a stable 6-character hash of the email, so the same email always maps to
 * the same name and two emails never fail to sign up because of each other.
 */
export function disambiguatedName(email: string): string {
  const suffix = `-${emailHash(email)}`;
  return `${trimToLength(nameFromEmail(email), MAX_NAME_LENGTH - suffix.length)}${suffix}`;
}

function trimToLength(name: string, max: number): string {
  return name.slice(0, max).replace(/-+$/g, '');
}

function emailHash(email: string): string {
  return createHash('sha256').update(email.trim().toLowerCase()).digest('hex').slice(0, 6);
}

/** Names of the things the controller owns in the world (contract section 5). */
export const MANAGED_BY_LABEL = 'cloud.blytz.managed-by';
export const MANAGED_BY_VALUE = 'blytz';
export const CUSTOMER_LABEL = 'cloud.blytz.customer';
export const SPEC_HASH_LABEL = 'cloud.blytz.spec-hash';
export const OBJECT_PREFIX = 'blytz-';

export function containerName(customer: string): string {
  return `${OBJECT_PREFIX}${customer}`;
}

/**
 * The name a blue-green update's new container starts under, beside `blytz-<name>`: the `_`
 * cannot occur in a customer name (a DNS-1123 label), so it never collides with another
 * customer's container. Once the old container is gone it is renamed to `blytz-<name>`.
 */
export const NEXT_CONTAINER_SUFFIX = '_next';
export function nextContainerName(customer: string): string {
  return `${containerName(customer)}${NEXT_CONTAINER_SUFFIX}`;
}

export function routeId(customer: string): string {
  return `${OBJECT_PREFIX}${customer}`;
}

/** The customer a route `@id` belongs to, or undefined when the route is not ours. */
export function customerFromRouteId(id: string): string | undefined {
  if (!id.startsWith(OBJECT_PREFIX)) return undefined;
  const name = id.slice(OBJECT_PREFIX.length);
  return isDns1123Label(name) ? name : undefined;
}

export function customerHost(customer: string, baseDomain: string): string {
  return `${customer}.${baseDomain}`;
}

/**
 * The origins a browser opens a customer's host from: `<scheme>://<host>`, and also with the port
 * the proxy listens on when that is not the scheme's default (`http://alice.blytz.localhost:8081`
 * under `make run`). OpenClaw's Control UI accepts only these origins.
 */
export function publicOrigins(host: string, scheme: 'http' | 'https', listenPort?: number): string[] {
  const origins = [`${scheme}://${host}`];
  const defaultPort = scheme === 'https' ? 443 : 80;
  if (listenPort !== undefined && listenPort !== defaultPort) origins.push(`${scheme}://${host}:${listenPort}`);
  return origins;
}

/** The customer a host under the base domain names (`<name>.<base>`), or undefined for any other host. */
export function customerFromHost(host: string, baseDomain: string): string | undefined {
  const suffix = `.${baseDomain}`;
  if (!host.endsWith(suffix)) return undefined;
  const name = host.slice(0, -suffix.length);
  return isDns1123Label(name) ? name : undefined;
}
