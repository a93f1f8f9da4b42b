import { NetworkingV1Api, type KubeConfig, type V1Ingress } from '@kubernetes/client-node';
import { canonicalJson } from '../../domain/canonical-json.js';
import { CUSTOMER_LABEL, isDns1123Label, MANAGED_BY_LABEL, MANAGED_BY_VALUE, routeId } from '../../domain/naming.js';
import { isNotFound } from '../../kube-api/client.js';
import type { Guard } from '../../resilience/guard.js';
import { checkExtraLabels } from '../../domain/labels.js';
import { baseLabels, objectName } from '../../kube-api/customer-object-meta.js';
import type { WatchedKind } from '../../kube-api/owned-objects-watch.js';
import type { RouteSnapshot } from '../caddy/caddy-route-table.js';
import type { JsonObject } from '../caddy/caddy-json.js';
import type { DesiredRoute, ObservedRoute, RouteTable, RouteTarget } from '../route-table.js';

/**
 * RouteTable on Kubernetes Ingresses (BLYTZ_ROUTES=ingress, runtime `kubernetes` only): one
 * networking.k8s.io/v1 Ingress per customer, named like its other objects (`objectName`, i.e.
 * `blytz-<name>`), labelled with the contract's marks (`cloud.blytz.managed-by=blytz`,
 * `cloud.blytz.customer=<name>`, plus BLYTZ_INSTANCE's), in the runtime's namespace.
 *
 * - upstream `<svc>.<ns>.svc:<port>` (the runtime's `upstream`): one rule for host `<name>.<base>`,
 *   path `/` (Prefix) to Service `<svc>` port `<port>`. An Ingress can only reach Services in its
 *   own namespace, so a dial into another namespace (or any other shape) is refused.
 * - suspended: Caddy serves a static 503 page; an Ingress has no static response. The Ingress is
 *   kept with annotation `cloud.blytz/suspended: "true"` and a rule for the host with no `http`
 *   paths, so it has no backend at all: the assistant's Service is unreachable through it, and
 *   the ingress controller answers with its default backend (ingress-nginx: 404, or whatever
 *   page its `--default-backend-service` serves). Keeping the object (rather than deleting it)
 *   keeps the host claimed and lets `list` tell "suspended" from "missing".
 *
 * Field ownership, as server-side apply would keep it: the table owns its labels, its annotation,
 * the rules and (only when BLYTZ_INGRESS_CLASS sets one) the class. Only those are compared, and
 * a write keeps everything else as it found it: a class the cluster's DefaultIngressClass
 * admission filled in (on create only: a replace without it would drop it, and with it the
 * route), annotations and labels of other tools (cert-manager, external-dns), `tls`. A hand edit
 * of an owned field is put back. TLS is left to the cluster.
 *
 * Every API call goes through the `kubernetes` Guard; writes are not retried by it (a replace
 * carries the read resourceVersion, so a conflict surfaces and the next reconcile retries).
 */

export const SUSPENDED_ANNOTATION = 'cloud.blytz/suspended';

export interface IngressRouteTableOptions {
  kubeConfig: KubeConfig;
  /** The runtime's namespace: customers' Services live there, and so do their Ingresses. */
  namespace: string;
  /** BLYTZ_INGRESS_CLASS: spec.ingressClassName; unset: the cluster's default IngressClass. */
  ingressClassName?: string;
  /** Stamped on every Ingress and required when listing (BLYTZ_INSTANCE). */
  extraLabels?: Record<string, string>;
  /** Wraps every API call (timeout, retries, breaker, metrics). */
  guard: Guard;
}

export class IngressRouteTable implements RouteTable {
  readonly #api: NetworkingV1Api;
  readonly #namespace: string;
  readonly #className: string | undefined;
  readonly #extraLabels: Record<string, string>;
  readonly #guard: Guard;

  constructor(options: IngressRouteTableOptions) {
    this.#api = options.kubeConfig.makeApiClient(NetworkingV1Api);
    this.#namespace = options.namespace;
    this.#className = options.ingressClassName;
    this.#extraLabels = checkExtraLabels(options.extraLabels ?? {});
    this.#guard = options.guard;
  }

  #selector(): string {
    return Object.entries({ [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, ...this.#extraLabels })
      .map(([k, v]) => `${k}=${v}`)
      .join(',');
  }

  /** Nothing to create: the ingress controller is the cluster's. */
  async ensureServer(): Promise<void> {}

  /** The Ingress `ensure` writes for a route. */
  manifest(route: DesiredRoute): V1Ingress {
    const suspended = route.target.kind === 'suspended';
    return {
      apiVersion: 'networking.k8s.io/v1',
      kind: 'Ingress',
      metadata: {
        name: objectName(route.customer),
        namespace: this.#namespace,
        labels: baseLabels(route.customer, this.#extraLabels),
        ...(suspended ? { annotations: { [SUSPENDED_ANNOTATION]: 'true' } } : {}),
      },
      spec: {
        ...(this.#className ? { ingressClassName: this.#className } : {}),
        rules: [
          route.target.kind === 'upstream'
            ? {
                host: route.host,
                http: {
                  paths: [{ path: '/', pathType: 'Prefix', backend: { service: this.#backendOf(route.target.dial) } }],
                },
              }
            : { host: route.host },
        ],
      },
    };
  }

  /** `<svc>.<ns>.svc:<port>` as an Ingress backend; only Services of our own namespace. */
  #backendOf(dial: string): { name: string; port: { number: number } } {
    const match = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.svc:(\d{1,5})$/.exec(dial);
    if (!match) throw new Error(`route upstream ${JSON.stringify(dial)} is not a Service address <svc>.<namespace>.svc:<port>`);
    const [, name = '', , namespace, , port] = match;
    if (namespace !== this.#namespace) {
      throw new Error(
        `route upstream ${dial} is in namespace ${namespace}; an Ingress in ${this.#namespace} can only reach Services there`,
      );
    }
    return { name, port: { number: Number(port) } };
  }

  /** What is compared: the fields this table writes, as plain JSON, keyed by the route's `@id`. */
  routeJson(route: DesiredRoute): JsonObject {
    return this.#owned(this.manifest(route));
  }

  /** One list of our Ingresses, as the route sweep compares them (never "server missing"). */
  async snapshot(): Promise<RouteSnapshot> {
    const ingresses = await this.#list();
    return { serverPresent: true, routes: ingresses.map((i) => this.#owned(i)) };
  }

  /**
   * The fields this table owns, as plain JSON keyed by the route's `@id` (the customer label), so
   * the API server's own fields and other writers' never count as a difference.
   */
  #owned(ingress: V1Ingress): JsonObject {
    const labels = ingress.metadata?.labels ?? {};
    const customer = labels[CUSTOMER_LABEL];
    const ownLabels = [MANAGED_BY_LABEL, CUSTOMER_LABEL, ...Object.keys(this.#extraLabels)];
    const suspended = ingress.metadata?.annotations?.[SUSPENDED_ANNOTATION];
    const plain = JSON.parse(
      JSON.stringify({
        labels: Object.fromEntries(Object.entries(labels).filter(([k]) => ownLabels.includes(k))),
        annotations: suspended === undefined ? {} : { [SUSPENDED_ANNOTATION]: suspended },
        spec: {
          ...(this.#className ? { ingressClassName: ingress.spec?.ingressClassName } : {}),
          rules: ingress.spec?.rules ?? [],
          ...(ingress.spec?.defaultBackend ? { defaultBackend: ingress.spec.defaultBackend } : {}),
        },
      }),
    ) as JsonObject;
    return { ...(customer !== undefined ? { '@id': routeId(customer) } : {}), ...plain };
  }

  /** `body` written over `existing`: our fields from `body`, everything else as it was. */
  #merged(existing: V1Ingress, body: V1Ingress): V1Ingress {
    const annotations = { ...(existing.metadata?.annotations ?? {}), ...(body.metadata?.annotations ?? {}) };
    if (body.metadata?.annotations?.[SUSPENDED_ANNOTATION] === undefined) delete annotations[SUSPENDED_ANNOTATION];
    const spec = { ...(existing.spec ?? {}), rules: body.spec?.rules ?? [] };
    delete spec.defaultBackend;
    if (this.#className) spec.ingressClassName = this.#className;
    return {
      ...existing,
      metadata: {
        ...existing.metadata,
        labels: { ...(existing.metadata?.labels ?? {}), ...(body.metadata?.labels ?? {}) },
        annotations,
      },
      spec,
    };
  }

  /** Ingresses have no catch-all route whose order could need repair. */
  needsRewrite(): boolean {
    return false;
  }

  async #list(): Promise<V1Ingress[]> {
    const list = await this.#guard('listIngresses', () =>
      this.#api.listNamespacedIngress({ namespace: this.#namespace, labelSelector: this.#selector() }),
    );
    return list.items;
  }

  async list(): Promise<ObservedRoute[]> {
    return (await this.#list()).map((i) => this.#observe(i)).filter((r): r is ObservedRoute => r !== undefined);
  }

  /** One read of the customer's Ingress; one this table did not make (other labels) is not a route of ours. */
  async get(customer: string): Promise<ObservedRoute | undefined> {
    const ingress = await this.#guard('readIngress', () =>
      this.#api
        .readNamespacedIngress({ name: objectName(customer), namespace: this.#namespace })
        .catch((error: unknown) => (isNotFound(error) ? undefined : Promise.reject(error))),
    );
    const labels = ingress?.metadata?.labels ?? {};
    const ours = Object.entries({ [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, ...this.#extraLabels }).every(([k, v]) => labels[k] === v);
    if (!ingress || !ours) return undefined;
    const route = this.#observe(ingress);
    return route?.customer === customer ? route : undefined;
  }

  #observe(ingress: V1Ingress): ObservedRoute | undefined {
    const customer = ingress.metadata?.labels?.[CUSTOMER_LABEL];
    if (customer === undefined || !isDns1123Label(customer)) return undefined;
    const rules = ingress.spec?.rules ?? [];
    const hosts = rules.map((r) => r.host).filter((h): h is string => typeof h === 'string');
    return { customer, id: routeId(customer), hosts, target: this.#targetOf(ingress) };
  }

  #targetOf(ingress: V1Ingress): ObservedRoute['target'] {
    const suspended = ingress.metadata?.annotations?.[SUSPENDED_ANNOTATION] === 'true';
    const rules = ingress.spec?.rules ?? [];
    // (tls is the cluster's to add: it does not change where the host goes.)
    if (rules.length !== 1 || ingress.spec?.defaultBackend) return { kind: 'unknown' };
    const paths = rules[0]?.http?.paths;
    if (suspended) return paths === undefined || paths.length === 0 ? { kind: 'suspended' } : { kind: 'unknown' };
    const path = paths?.length === 1 ? paths[0] : undefined;
    const service = path?.backend.service;
    const port = service?.port?.number;
    if (!path || path.path !== '/' || path.pathType !== 'Prefix' || !service || typeof port !== 'number' || service.port?.name) {
      return { kind: 'unknown' };
    }
    const target: RouteTarget = { kind: 'upstream', dial: `${service.name}.${this.#namespace}.svc:${port}` };
    return target;
  }

  async ensure(route: DesiredRoute): Promise<'created' | 'replaced' | 'unchanged'> {
    const body = this.manifest(route);
    const name = body.metadata?.name ?? '';
    const namespace = this.#namespace;
    const existing = await this.#guard('readIngress', () =>
      this.#api
        .readNamespacedIngress({ name, namespace })
        .catch((error: unknown) => (isNotFound(error) ? undefined : Promise.reject(error))),
    );
    if (!existing) {
      await this.#guard('createIngress', () => this.#api.createNamespacedIngress({ namespace, body }), { retry: false });
      return 'created';
    }
    if (canonicalJson(this.#owned(existing)) === canonicalJson(this.#owned(body))) return 'unchanged';
    // At the read resourceVersion (kept from `existing`): a conflict surfaces, the next reconcile retries.
    const next = this.#merged(existing, body);
    try {
      await this.#guard('replaceIngress', () => this.#api.replaceNamespacedIngress({ name, namespace, body: next }), {
        retry: false,
      });
    } catch (error) {
      if (!isNotFound(error)) throw error;
      // Deleted between our read and our write (by hand): create it afresh.
      await this.#guard('createIngress', () => this.#api.createNamespacedIngress({ namespace, body }), { retry: false });
      return 'created';
    }
    return 'replaced';
  }

  /** One Ingress per route, so one write per route that differs (no bulk write exists). */
  async ensureMany(routes: DesiredRoute[]): Promise<{ written: number }> {
    const seen = new Set<string>();
    for (const route of routes) {
      if (seen.has(route.customer)) throw new Error(`ensureMany: customer ${route.customer} is listed twice`);
      seen.add(route.customer);
    }
    let written = 0;
    for (const route of routes) if ((await this.ensure(route)) !== 'unchanged') written++;
    return { written };
  }

  async remove(customer: string): Promise<boolean> {
    const name = objectName(customer);
    return this.#guard('deleteIngress', () =>
      this.#api.deleteNamespacedIngress({ name, namespace: this.#namespace }).then(
        () => true,
        (error: unknown) => (isNotFound(error) ? false : Promise.reject(error)),
      ),
    );
  }

  /** The Ingresses this table writes, for OwnedObjectsWatch (as the runtime's `ownedKinds`). */
  ownedKinds(): { labelSelector: string; kinds: WatchedKind[] } {
    const labelSelector = this.#selector();
    const namespace = this.#namespace;
    return {
      labelSelector,
      kinds: [
        {
          plural: 'ingresses',
          path: `/apis/networking.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/ingresses`,
          list: () => this.#guard('listIngresses', () => this.#api.listNamespacedIngress({ namespace, labelSelector, limit: 1 })),
        },
      ],
    };
  }

  async ping(): Promise<void> {
    await this.#guard('ping', () =>
      this.#api.listNamespacedIngress({ namespace: this.#namespace, labelSelector: this.#selector(), limit: 1 }),
    );
  }
}
