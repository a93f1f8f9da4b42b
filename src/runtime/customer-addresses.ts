/**
 * The second lock on a model credential: besides naming its customer, a request must come from
 * that customer's own container, where the runtime can tell which address that is. A credential
 * copied out of one assistant (its agent runs shell tools; treat it as hostile) into another is
 * then refused, and so is one used from anywhere else on the network.
 *
 * What is checked is the TCP peer address the gateway sees. On Docker that is the container's
 * address on the customers' network (the gateway listens on that network's own address, so no
 * NAT sits in between); on Kubernetes it is the pod IP (traffic to a ClusterIP Service keeps its
 * source; the NetworkPolicy admits only customer pods). Where the runtime cannot tell (the
 * gateway behind a proxy, a host-run assistant in a test), BLYTZ_MODEL_SOURCE_CHECK=off leaves
 * the credential alone as the key.
 */

export interface CustomerAddresses {
  customer: string;
  /** The addresses its running containers (pods) have. */
  addresses: string[];
}

/** One listing of every customer container's addresses (one runtime call, never one per customer). */
export type AddressLister = () => Promise<CustomerAddresses[]>;

export interface SourceCheck {
  /** Whether a request from `remoteAddress` may use `customer`'s credential. */
  allows(customer: string, remoteAddress: string | undefined): Promise<boolean>;
}

/** BLYTZ_MODEL_SOURCE_CHECK=off. */
export const anySource: SourceCheck = { allows: () => Promise.resolve(true) };

/** `::ffff:10.0.0.5` (an IPv4 peer on a dual-stack socket) is `10.0.0.5`. */
export function normalizeAddress(address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address;
}

export interface AddressBookOptions {
  /** A "yes" is given from a listing at most this old (an address freed by one customer's container may go to another's). Default 5 s. */
  maxAgeMs?: number;
  /** A "no" lists again first if the listing is older than this (a container just started). Default 1 s. */
  minRefreshMs?: number;
  now?: () => number;
}

/**
 * Addresses of customer containers, listed from the runtime on demand: at most one listing in
 * flight, a fresh one before any answer from a stale one, and never more often than the
 * refresh floor however many refused requests arrive.
 */
export class AddressBook implements SourceCheck {
  readonly #list: AddressLister;
  readonly #maxAgeMs: number;
  readonly #minRefreshMs: number;
  readonly #now: () => number;
  #owners = new Map<string, string>();
  #listedAt = Number.NEGATIVE_INFINITY;
  #listing: Promise<void> | undefined;

  constructor(list: AddressLister, options: AddressBookOptions = {}) {
    this.#list = list;
    this.#maxAgeMs = options.maxAgeMs ?? 5000;
    this.#minRefreshMs = options.minRefreshMs ?? 1000;
    this.#now = options.now ?? (() => performance.now());
  }

  async allows(customer: string, remoteAddress: string | undefined): Promise<boolean> {
    if (!remoteAddress) return false;
    const address = normalizeAddress(remoteAddress);
    if (this.#now() - this.#listedAt > this.#maxAgeMs) await this.#refresh();
    if (this.#owners.get(address) === customer) return true;
    if (this.#now() - this.#listedAt > this.#minRefreshMs) {
      await this.#refresh();
      return this.#owners.get(address) === customer;
    }
    return false;
  }

  #refresh(): Promise<void> {
    this.#listing ??= this.#list()
      .then((entries) => {
        const owners = new Map<string, string>();
        const shared = new Set<string>();
        for (const { customer, addresses } of entries) {
          for (const raw of addresses) {
            const address = normalizeAddress(raw);
            // An address claimed by two customers (a stale listing mid-recreate) belongs to neither.
            if (owners.has(address) && owners.get(address) !== customer) shared.add(address);
            owners.set(address, customer);
          }
        }
        for (const address of shared) owners.delete(address);
        this.#owners = owners;
        this.#listedAt = this.#now();
      })
      .finally(() => {
        this.#listing = undefined;
      });
    return this.#listing;
  }
}
