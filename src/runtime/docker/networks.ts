import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type Docker from 'dockerode';
import { CUSTOMER_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, OBJECT_PREFIX } from '../../domain/naming.js';
import { poolEngineKey } from '../../domain/pool.js';
import type { Guard } from '../../resilience/guard.js';
import { httpStatusOf } from '../../resilience/transient.js';
import { labelFilter, POOL_SLOT_LABEL } from '../../domain/labels.js';

/**
 * Tenant isolation on Docker: every customer gets a bridge network of its own, `blytz-<name>`,
 * with its own small subnet and a host bridge interface named `bz-<hash>`, so no two customers
 * share a layer-2 segment and the host can tell them apart by interface and by address.
 *
 * A network of its own is not yet isolation: between two bridges the host routes (it forwards
 * IPv4 for the containers' way out), so without a packet filter any customer container reaches
 * any other's gateway port. Docker's own filter (dockerd with iptables on) drops traffic between
 * two of its networks; where dockerd runs without iptables, `deploy/host/blytz-tenants.nft` does
 * it, matching the `bz-` interfaces. Both also keep customers off the host's own ports, except
 * the ones the ruleset opens (the model gateway, later). docs/security.md says which applies
 * where.
 *
 * Addresses: a /28 per customer (the host end, the customer's container, a blue-green update's
 * second one) from `pool` (BLYTZ_DOCKER_NETWORK_POOL, default 10.199.0.0/16: 4,096 customers).
 * Docker's default pools hold about 30 networks; explicit subnets do not run out. The first
 * candidate depends on the customer's name, and subnets of any existing Docker network or host
 * route (another engine's bridges on the same machine) are skipped.
 */

export const BRIDGE_PREFIX = 'bz-';
export const DEFAULT_NETWORK_POOL = '10.199.0.0/16';
/** Addresses per customer network: 2^(32-28) = 16. */
export const CUSTOMER_PREFIX_LENGTH = 28;
// Networks left with no container (a crash between creating one and its container) are removed
// once they are this old, never younger: a network just made waits for its container.
const IDLE_NETWORK_MIN_AGE_SECONDS = 10 * 60;

export interface Ipv4Cidr {
  /** The first address, as an unsigned 32-bit number. */
  base: number;
  prefix: number;
}

/** `10.199.0.0/16` -> {base, prefix}; the base is aligned to the prefix or it is an error. */
export function parseCidr(text: string): Ipv4Cidr {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(text.trim());
  const octets = match?.slice(1, 5).map(Number);
  const prefix = Number(match?.[5]);
  if (!match || !octets || octets.some((o) => o > 255) || prefix > 32)
    throw new Error(`${JSON.stringify(text)} is not an IPv4 CIDR like 10.199.0.0/16`);
  const base = octets.reduce((n, o) => n * 256 + o, 0);
  if (base % 2 ** (32 - prefix) !== 0)
    throw new Error(`${text} has host bits set: the network is ${formatCidr({ base: alignDown(base, prefix), prefix })}`);
  return { base, prefix };
}

export function formatCidr(cidr: Ipv4Cidr): string {
  return `${formatIp(cidr.base)}/${cidr.prefix}`;
}

export function formatIp(n: number): string {
  return [24, 16, 8, 0].map((shift) => Math.floor(n / 2 ** shift) % 256).join('.');
}

function alignDown(n: number, prefix: number): number {
  const size = 2 ** (32 - prefix);
  return n - (n % size);
}

export function overlaps(a: Ipv4Cidr, b: Ipv4Cidr): boolean {
  const aEnd = a.base + 2 ** (32 - a.prefix);
  const bEnd = b.base + 2 ** (32 - b.prefix);
  return a.base < bEnd && b.base < aEnd;
}

/** How many customer subnets the pool holds (0 when the pool is smaller than one). */
export function poolSlots(pool: Ipv4Cidr): number {
  return pool.prefix > CUSTOMER_PREFIX_LENGTH ? 0 : 2 ** (CUSTOMER_PREFIX_LENGTH - pool.prefix);
}

/**
 * The pool's customer subnets in the order this customer tries them: from a slot chosen by its
 * name, round the pool once. Pure: the same name always starts at the same subnet, so a customer
 * usually gets its old subnet back, and two customers rarely try the same one first.
 */
export function* subnetCandidates(pool: Ipv4Cidr, customer: string): Generator<Ipv4Cidr> {
  const slots = poolSlots(pool);
  if (slots === 0) return;
  const start = createHash('sha256').update(customer).digest().readUInt32BE(0) % slots;
  const size = 2 ** (32 - CUSTOMER_PREFIX_LENGTH);
  for (let i = 0; i < slots; i++) yield { base: pool.base + ((start + i) % slots) * size, prefix: CUSTOMER_PREFIX_LENGTH };
}

/**
 * Who a network is for: a customer (given by name), or a warm pool slot, which gets a network of
 * its own exactly like a customer (`blytz-pool_<id>`, see poolEngineKey; labelled with the slot), kept by the
 * slot's container after a customer claims it.
 */
export type NetworkOwner = string | { poolSlot: number };

/** The name part of the owner's network (a slot's carries the instance: see poolEngineKey). */
function ownerKey(owner: NetworkOwner, instance: string | undefined): string {
  return typeof owner === 'string' ? owner : poolEngineKey(owner.poolSlot, instance);
}

function ownerLabels(owner: NetworkOwner): Record<string, string> {
  return typeof owner === 'string' ? { [CUSTOMER_LABEL]: owner } : { [POOL_SLOT_LABEL]: String(owner.poolSlot) };
}

/** The owner a network's (or container's) labels name: `c:<customer>` or `p:<slot>`, comparable as text. */
function ownerOfLabels(labels: Record<string, string> | undefined): string | undefined {
  if (labels?.[CUSTOMER_LABEL]) return `c:${labels[CUSTOMER_LABEL]}`;
  if (labels?.[POOL_SLOT_LABEL]) return `p:${labels[POOL_SLOT_LABEL]}`;
  return undefined;
}

/** `blytz-<name>`, like the container's (Docker keeps networks and containers apart). */
export function customerNetworkName(customer: string): string {
  return `${OBJECT_PREFIX}${customer}`;
}

/**
 * The host's interface for a customer's network: `bz-` and 12 hex characters of a hash of the
 * instance and the name (Linux allows 15 characters), so the host's packet filter can match all
 * customer networks by prefix, and two control planes on one machine never pick the same one.
 */
export function bridgeName(customer: string, instance = ''): string {
  return `${BRIDGE_PREFIX}${createHash('sha256').update(`${instance}/${customer}`).digest('hex').slice(0, 12)}`;
}

/** IPv4 destinations of this machine's routing table (`/proc/net/route`), when it can be read. */
export async function hostRoutes(path = '/proc/net/route'): Promise<Ipv4Cidr[]> {
  const text = await readFile(path, 'utf8').catch(() => '');
  const routes: Ipv4Cidr[] = [];
  for (const line of text.split('\n').slice(1)) {
    const [, destination, , , , , , mask] = line.trim().split(/\s+/);
    if (!destination || !mask) continue;
    // Little-endian hex, as the kernel prints them.
    const base = Buffer.from(destination, 'hex').readUInt32LE(0);
    const bits = Buffer.from(mask, 'hex').readUInt32LE(0);
    const prefix = bits.toString(2).replace(/0/g, '').length;
    if (prefix > 0) routes.push({ base, prefix }); // the default route overlaps everything: skipped
  }
  return routes;
}

export interface CustomerNetworksOptions {
  docker: Docker;
  guard: Guard;
  extraLabels: Record<string, string>;
  pool?: string;
  /** Where other networks on this machine show up (tests give another file). */
  routes?: () => Promise<Ipv4Cidr[]>;
}

export class NetworkPoolExhaustedError extends Error {
  constructor(pool: string) {
    super(
      `no free /${CUSTOMER_PREFIX_LENGTH} left in BLYTZ_DOCKER_NETWORK_POOL ${pool} for another customer network; give it a larger range`,
    );
    this.name = 'NetworkPoolExhaustedError';
  }
}

export class CustomerNetworks {
  readonly #docker: Docker;
  readonly #guard: Guard;
  readonly #extraLabels: Record<string, string>;
  readonly #pool: Ipv4Cidr;
  readonly #routes: () => Promise<Ipv4Cidr[]>;

  /** The pool customer subnets come from, e.g. `10.199.0.0/16`. */
  get pool(): string {
    return formatCidr(this.#pool);
  }

  constructor(options: CustomerNetworksOptions) {
    this.#docker = options.docker;
    this.#guard = options.guard;
    this.#extraLabels = options.extraLabels;
    this.#pool = parseCidr(options.pool ?? DEFAULT_NETWORK_POOL);
    if (poolSlots(this.#pool) === 0) throw new Error(`BLYTZ_DOCKER_NETWORK_POOL must be /${CUSTOMER_PREFIX_LENGTH} or larger`);
    this.#routes = options.routes ?? (() => hostRoutes());
  }

  /** The customer's (or pool slot's) network, made when missing. Idempotent; safe from two workers at once. */
  async ensure(owner: NetworkOwner): Promise<string> {
    const key = ownerKey(owner, this.#extraLabels['cloud.blytz.instance']);
    const name = customerNetworkName(key);
    if (await this.#exists(name)) return name;
    const taken = [...(await this.#networkSubnets()), ...(await this.#routes())];
    for (const subnet of subnetCandidates(this.#pool, key)) {
      if (taken.some((t) => overlaps(t, subnet))) continue;
      const created = await this.#create(owner, name, subnet);
      if (created === 'created' || created === 'exists') return name;
      taken.push(subnet); // someone took it between our listing and our create
    }
    throw new NetworkPoolExhaustedError(formatCidr(this.#pool));
  }

  /** Removes the customer's (or slot's) network once no container is on it (after its last container went). */
  async releaseIfUnused(owner: NetworkOwner): Promise<void> {
    const name = customerNetworkName(ownerKey(owner, this.#extraLabels['cloud.blytz.instance']));
    // A stopped container (a suspended customer) is on no network as the engine counts endpoints,
    // but it starts again on this one: the network stays while any container of the customer does.
    if (await this.#hasContainers(owner)) return;
    await this.#guard('removeNetwork', async (abortSignal) => {
      const network = this.#docker.getNetwork(name);
      let info: Docker.NetworkInspectInfo;
      try {
        info = await inspect(network);
      } catch (error) {
        if (httpStatusOf(error) === 404) return;
        throw error;
      }
      if (!this.#ours(info.Labels) || Object.keys(info.Containers ?? {}).length > 0) return;
      try {
        await network.remove({ abortSignal });
      } catch (error) {
        // Gone already, or a container joined it meanwhile (a new one for the same customer).
        if ([403, 404, 409].includes(httpStatusOf(error) ?? 0)) return;
        throw error;
      }
    });
  }

  /**
   * Removes our networks that are old enough (crash leftovers) and that no container of their
   * customer, running or stopped, still needs. Not the engine's own prune: it removes a network
   * whose only container is stopped, and a suspended customer could not start again.
   */
  async pruneIdle(): Promise<void> {
    const networks = await this.#guard('listNetworks', (abortSignal) =>
      this.#docker.listNetworks({ filters: { label: labelFilter(this.#extraLabels) }, abortSignal } as Docker.NetworkListOptions),
    );
    const oldEnough = Date.now() - IDLE_NETWORK_MIN_AGE_SECONDS * 1000;
    const idle = networks.filter(
      (network) => ownerOfLabels(network.Labels) && this.#ours(network.Labels) && Date.parse(network.Created ?? '') <= oldEnough,
    );
    if (idle.length === 0) return;
    // One listing of every container of ours, stopped ones included, for all the candidates.
    const containers = await this.#guard('listContainers', (abortSignal) =>
      this.#docker.listContainers({ all: true, filters: { label: labelFilter(this.#extraLabels) }, abortSignal }),
    );
    const inUse = new Set(containers.map((c) => ownerOfLabels(c.Labels)));
    for (const network of idle) {
      if (inUse.has(ownerOfLabels(network.Labels))) continue;
      const customer = network.Labels?.[CUSTOMER_LABEL];
      await this.releaseIfUnused(customer ?? { poolSlot: Number(network.Labels?.[POOL_SLOT_LABEL]) });
    }
  }

  /** Whether any container of the customer or slot (of this instance), in any state, exists. */
  async #hasContainers(owner: NetworkOwner): Promise<boolean> {
    const containers = await this.#guard('listContainers', (abortSignal) =>
      this.#docker.listContainers({ all: true, filters: { label: labelFilter(this.#extraLabels, ownerLabels(owner)) }, abortSignal }),
    );
    return containers.length > 0;
  }

  async #exists(name: string): Promise<boolean> {
    return this.#guard('inspectNetwork', async () => {
      try {
        const info = await inspect(this.#docker.getNetwork(name));
        if (!this.#ours(info.Labels))
          throw new Error(`a Docker network named ${name} exists and is not blytz's: remove or rename it`);
        return true;
      } catch (error) {
        if (httpStatusOf(error) === 404) return false;
        throw error;
      }
    });
  }

  async #networkSubnets(): Promise<Ipv4Cidr[]> {
    const networks = await this.#guard('listNetworks', (abortSignal) => this.#docker.listNetworks({ abortSignal }));
    const subnets: Ipv4Cidr[] = [];
    for (const network of networks) {
      for (const config of network.IPAM?.Config ?? []) {
        try {
          if (config.Subnet) subnets.push(parseCidr(normaliseCidr(config.Subnet)));
        } catch {
          // IPv6, or not a network address: not in our way.
        }
      }
    }
    return subnets;
  }

  async #create(owner: NetworkOwner, name: string, subnet: Ipv4Cidr): Promise<'created' | 'exists' | 'taken'> {
    const gateway = formatIp(subnet.base + 1);
    try {
      await this.#guard(
        'createNetwork',
        (abortSignal) =>
          this.#docker.createNetwork({
            Name: name,
            Driver: 'bridge',
            CheckDuplicate: true,
            Internal: false, // the assistant talks to Telegram and model providers
            EnableIPv6: false,
            IPAM: { Driver: 'default', Config: [{ Subnet: formatCidr(subnet), Gateway: gateway }] },
            Options: {
              'com.docker.network.bridge.name': bridgeName(ownerKey(owner, this.#extraLabels['cloud.blytz.instance']), this.#extraLabels['cloud.blytz.instance']),
              // Only one customer's containers are on it; what isolates is the host's filter.
              'com.docker.network.bridge.enable_icc': 'true',
              'com.docker.network.bridge.enable_ip_masquerade': 'true',
            },
            Labels: { ...this.#extraLabels, [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, ...ownerLabels(owner) },
            abortSignal,
          } as Docker.NetworkCreateOptions),
        { retry: false },
      );
      return 'created';
    } catch (error) {
      const message = (error as Error).message ?? '';
      if (httpStatusOf(error) === 409 || /already exists/i.test(message)) return 'exists';
      if (/overlap/i.test(message)) return 'taken';
      throw error;
    }
  }

  #ours(labels: Record<string, string> | undefined): boolean {
    if (labels?.[MANAGED_BY_LABEL] !== MANAGED_BY_VALUE) return false;
    return Object.entries(this.#extraLabels).every(([key, value]) => labels[key] === value);
  }
}

/** dockerode's network inspect takes no abort signal; the guard's timeout still bounds it. */
function inspect(network: Docker.Network): Promise<Docker.NetworkInspectInfo> {
  return network.inspect() as Promise<Docker.NetworkInspectInfo>;
}

/** A subnet as the engine reports it, aligned (`10.199.0.17/28` -> `10.199.0.16/28`). */
function normaliseCidr(text: string): string {
  const [address, prefix] = text.split('/');
  const parsed = /^(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(address ?? '');
  if (!parsed || prefix === undefined) return text;
  const base = parsed
    .slice(1, 5)
    .map(Number)
    .reduce((n, o) => n * 256 + o, 0);
  return `${formatIp(alignDown(base, Number(prefix)))}/${prefix}`;
}
