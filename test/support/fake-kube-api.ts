import { createHash, randomUUID } from 'node:crypto';
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { WebSocket, WebSocketServer } from 'ws';
import { decodeError } from './fake-kube/formats.js';
import { defaultBuiltIn, validateBuiltIn } from './fake-kube/validation.js';
import {
  forbiddenMessage,
  KIT_SERVICE_ACCOUNT,
  kitRbac,
  RbacAuthorizer,
  serviceAccountUser,
  type RequestAttributes,
} from './fake-kube/rbac.js';

/**
 * An in-process Kubernetes API server for tests: no real one can run on these machines. It
 * speaks the wire protocol of the kinds Blytz uses, closely enough for the real
 * `@kubernetes/client-node` to drive it:
 *
 * - one resourceVersion counter for everything (like etcd's revision), lists carry it;
 * - `?watch=true` streams newline-delimited JSON events; `resourceVersion` replays history after
 *   it (or sends synthetic ADDED events for what exists when absent or "0"); bookmarks when
 *   `allowWatchBookmarks=true`; after `compact()`, a watch from an older version gets the real
 *   server's answer: HTTP 200 and one `ERROR` event carrying a 410 Expired Status;
 * - create/get/update (optimistic concurrency on metadata.resourceVersion)/patch (merge patch,
 *   JSON patch; strategic merge is treated as merge)/delete, with the status subresource for
 *   kinds that have one (main writes ignore status, /status writes ignore everything else);
 * - RBAC (fake-kube/rbac.ts): requests with a token from `serviceAccountToken` (or
 *   `kitControllerConfig`, the kit's rbac.yaml installed) get 403 Forbidden for anything not
 *   granted; other tokens are the cluster's administrator;
 * - built-in objects defaulted and validated as the real server does (fake-kube/validation.ts:
 *   the OpenAPI models of `kubernetes-models` and the server's field rules, 422 Invalid);
 * - deletion: finalizers (a delete sets deletionTimestamp and bumps the generation; the object
 *   goes when the last one is removed), pods Terminating for their grace period, garbage
 *   collection by ownerReference (Background, Foreground, Orphan);
 * - label selectors (=, ==, !=, in, notin, exists, !exists) and `metadata.name` field selectors;
 * - `pods/<name>/exec` as the real server serves it: a WebSocket upgrade (subprotocol
 *   v5/v4.channel.k8s.io), output on channels 1 and 2, then a Status on channel 3 (a
 *   `NonZeroExitCode` failure carries the exit code); a missing pod or container is refused
 *   before the upgrade with an HTTP error and a Status body.
 *
 * Test hooks: `compact()`, `breakWatches()`, `failNext()`, `hangNext()`, `setStatus()`,
 * `simulateDeployments` (the Deployment and ReplicaSet controllers and the kubelet in small:
 * ReplicaSets and pods owned as the real ones are, ready status, a pod address each),
 * `holdDeploymentController()`, `holdKubelet()`, `crashLoop()`, `execHandler` (what a command run
 * in a pod answers), `forbidden` (what RBAC refused) and a request log.
 */

type Json = Record<string, unknown>;
/** What tests read back: loose, so assertions can reach into nested fields. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type LooseObject = Record<string, any>;

interface Kind {
  group: string; // '' for core
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
  statusSubresource: boolean;
  /** metadata.generation is kept (bumped on spec changes). */
  generation: boolean;
}

export const FAKE_KINDS: readonly Kind[] = [
  { group: '', version: 'v1', plural: 'secrets', kind: 'Secret', namespaced: true, statusSubresource: false, generation: false },
  { group: '', version: 'v1', plural: 'services', kind: 'Service', namespaced: true, statusSubresource: true, generation: false },
  { group: '', version: 'v1', plural: 'pods', kind: 'Pod', namespaced: true, statusSubresource: true, generation: false },
  {
    group: '',
    version: 'v1',
    plural: 'configmaps',
    kind: 'ConfigMap',
    namespaced: true,
    statusSubresource: false,
    generation: false,
  },
  {
    group: '',
    version: 'v1',
    plural: 'persistentvolumeclaims',
    kind: 'PersistentVolumeClaim',
    namespaced: true,
    statusSubresource: true,
    generation: false,
  },
  {
    group: 'apps',
    version: 'v1',
    plural: 'deployments',
    kind: 'Deployment',
    namespaced: true,
    statusSubresource: true,
    generation: true,
  },
  {
    group: 'apps',
    version: 'v1',
    plural: 'replicasets',
    kind: 'ReplicaSet',
    namespaced: true,
    statusSubresource: true,
    generation: true,
  },
  {
    group: 'networking.k8s.io',
    version: 'v1',
    plural: 'ingresses',
    kind: 'Ingress',
    namespaced: true,
    statusSubresource: true,
    generation: true,
  },
  {
    group: 'networking.k8s.io',
    version: 'v1',
    plural: 'networkpolicies',
    kind: 'NetworkPolicy',
    namespaced: true,
    statusSubresource: false,
    generation: true,
  },
  {
    group: 'coordination.k8s.io',
    version: 'v1',
    plural: 'leases',
    kind: 'Lease',
    namespaced: true,
    statusSubresource: false,
    generation: false,
  },
  {
    group: 'blytz.cloud',
    version: 'v1alpha1',
    plural: 'customers',
    kind: 'Customer',
    namespaced: true,
    statusSubresource: true,
    generation: true,
  },
];

interface StoredEvent {
  rv: number;
  kind: Kind;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Json;
}

interface Watcher {
  kind: Kind;
  namespace: string | undefined;
  selector: Selector;
  fieldName: string | undefined;
  bookmarks: boolean;
  res: ServerResponse;
  timer: NodeJS.Timeout | undefined;
}

export interface RequestRecord {
  method: string;
  path: string;
  query: string;
  watch: boolean;
}

export interface FakeKubeApiOptions {
  /** How often open watches with allowWatchBookmarks get a BOOKMARK (default 1000 ms). */
  bookmarkIntervalMs?: number;
  /** The prometheus-operator's CRDs (ServiceMonitor, PrometheusRule) are installed (default: not). */
  prometheusOperator?: boolean;
  /** Per-kind admission: may return a changed object or throw a FakeApiError (e.g. schema validation). */
  admit?: Partial<Record<string, (object: Json) => Json>>;
}

export class FakeApiError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly causes: Array<{ field: string; message: string }> = [],
  ) {
    super(message);
  }
}

export class FakeKubeApi {
  readonly #objects = new Map<string, Json>(); // `${plural}.${group}/${ns}/${name}`
  readonly #events: StoredEvent[] = [];
  readonly #watchers = new Set<Watcher>();
  readonly #sockets = new Set<Socket>();
  readonly #failures: Array<{ method: string; path: RegExp; status: number; times: number }> = [];
  readonly #options: FakeKubeApiOptions;
  #rv = 100;
  #held: Array<() => void> | undefined;
  readonly #hangs: Array<{ method: string; path: RegExp; times: number; token: string | undefined }> = [];
  readonly #hung = new Set<ServerResponse>();
  #compactedRv = 0;
  #server: Server | undefined;
  #url = '';
  readonly requests: RequestRecord[] = [];
  /**
   * The IngressClass marked `ingressclass.kubernetes.io/is-default-class: "true"` in the cluster:
   * the DefaultIngressClass admission plugin writes it into every Ingress *created* without a
   * class (never on update).
   */
  defaultIngressClass: string | undefined;
  /** The StorageClass marked default in the cluster: the DefaultStorageClass admission plugin writes it into PVCs created without one. */
  defaultStorageClass: string | undefined = 'standard';
  #clusterIPs = 0;
  #podIPs = 0;
  /** When true, every Deployment write is followed by a status as if all its replicas were ready. */
  simulateDeployments = false;
  /** When set, every new watch request is answered with this HTTP status (an API server that is restarting). */
  rejectWatches: number | undefined;
  /** What a command run through pods/exec answers (the container's process); by default no command exists. */
  execHandler: (call: FakeExecCall) => FakeExecResult | Promise<FakeExecResult> = (call) => ({
    exitCode: 127,
    stderr: `sh: ${call.command[0] ?? ''}: not found\n`,
  });
  /** Every pods/exec call that reached a container, in order. */
  readonly execCalls: FakeExecCall[] = [];
  #gcQueued = false;
  #kubeletHeld: string[] | undefined;
  /** Terminating pods whose kubelet has stopped them. */
  readonly #stoppedPods = new Set<string>();
  readonly #syncQueued = new Set<string>();
  #controllerHeld = false;
  readonly #everAvailable = new Set<string>();
  readonly #crashLooping = new Map<string, { exitCode: number }>();
  readonly #maxPods = new Map<string, number>();
  /** How long after a Deployment write its controller acts (it merges what comes meanwhile). */
  deploymentSyncDelayMs = 5;
  /** How long a deleted pod stays Terminating (its grace period, scaled down). */
  podGracePeriodMs = 50;
  readonly #wss = new WebSocketServer({ noServer: true, handleProtocols: pickChannelProtocol });
  readonly #rbac = new RbacAuthorizer();
  /** Service-account tokens handed out by `serviceAccountToken`: their requests are authorized by RBAC. */
  readonly #users = new Map<string, string>();
  /** Requests refused with 403, for assertions and for the message of a failing test. */
  readonly forbidden: Array<RequestAttributes & { user: string }> = [];

  constructor(options: FakeKubeApiOptions = {}) {
    this.#options = options;
  }

  get url(): string {
    return this.#url;
  }

  async start(): Promise<string> {
    const server = createServer((req, res) => {
      this.#handle(req, res).catch((error: unknown) => {
        if (!res.headersSent) sendStatus(res, 500, 'InternalError', (error as Error).message);
        else res.destroy();
      });
    });
    server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => this.#upgrade(req, socket, head));
    server.on('connection', (socket) => {
      this.#sockets.add(socket);
      socket.on('close', () => this.#sockets.delete(socket));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.#server = server;
    this.#url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return this.#url;
  }

  async stop(): Promise<void> {
    for (const w of this.#watchers) this.#closeWatcher(w);
    for (const socket of this.#sockets) socket.destroy();
    for (const client of this.#wss.clients) client.terminate();
    await new Promise<void>((resolve) => (this.#server ? this.#server.close(() => resolve()) : resolve()));
  }

  /** A KubeConfig for the real client pointing at this server. */
  kubeConfig(token = 'fake-token'): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: this.#url, skipTLSVerify: true }],
      users: [{ name: 'test', token }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'test', namespace: 'default' }],
      currentContext: 'fake',
    });
    return kc;
  }

  /**
   * Installs RBAC objects (Role, RoleBinding, ClusterRole, ClusterRoleBinding) into `namespace`,
   * as `kubectl apply -n namespace` would. They govern requests made with a token from
   * `serviceAccountToken`; any other token is the cluster's administrator (the test itself, kubectl).
   */
  installRbac(objects: ReadonlyArray<Record<string, unknown>>, namespace: string): void {
    this.#rbac.install(objects, namespace);
  }

  /** A bearer token that authenticates as `system:serviceaccount:<namespace>:<name>`, authorized by RBAC alone. */
  serviceAccountToken(namespace: string, name: string): string {
    const token = `sa-${namespace}-${name}-${randomUUID()}`;
    this.#users.set(token, serviceAccountUser(namespace, name));
    return token;
  }

  /**
   * The shipped controller's view of the cluster: the kit's RBAC (deploy/kubernetes/rbac.yaml)
   * installed in `namespace` and a KubeConfig for its service account, so every call the code
   * makes is allowed only as far as the kit grants it.
   */
  kitControllerConfig(namespace: string): KubeConfig {
    this.installRbac(kitRbac(), namespace);
    return this.kubeConfig(this.serviceAccountToken(namespace, KIT_SERVICE_ACCOUNT));
  }

  /** Forgets the event history: watches from any version before now get 410 Gone. */
  compact(): void {
    this.#compactedRv = this.#rv;
    this.#events.length = 0;
  }

  /** Cuts every open watch connection mid-stream (no clean end), like a dropped TCP connection. */
  breakWatches(): void {
    for (const w of [...this.#watchers]) {
      this.#watchers.delete(w);
      clearInterval(w.timer);
      w.res.socket?.destroy();
    }
  }

  /** Open watch connections (optionally for one plural). */
  watchCount(plural?: string): number {
    return [...this.#watchers].filter((w) => plural === undefined || w.kind.plural === plural).length;
  }

  /**
   * The next `times` requests matching method and path hang: read, never answered (a wedged API
   * server or a half-open connection). They end when the client gives up or the server stops.
   */
  hangNext(method: string, path: RegExp, times = 1, token?: string): void {
    this.#hangs.push({ method, path, times, token });
  }

  /** Requests from now on are answered again (those hanging now stay hung until their client gives up). */
  clearHangs(): void {
    this.#hangs.length = 0;
  }

  /** Requests hanging now (for assertions). */
  get hanging(): number {
    return this.#hung.size;
  }

  /** The next `times` requests matching method and path answer `status` (e.g. 500, 503). */
  failNext(method: string, path: RegExp, status: number, times = 1): void {
    this.#failures.push({ method, path, status, times });
  }

  /**
   * Holds every watch event (and bookmark) back until `releaseWatchEvents()`, as a slow or busy
   * watch connection would: requests are answered at once while their events wait.
   */
  holdWatchEvents(): void {
    this.#held ??= [];
  }

  releaseWatchEvents(): void {
    const held = this.#held ?? [];
    this.#held = undefined;
    for (const send of held) send();
  }

  /** Sends a BOOKMARK to every open bookmark-enabled watch now. */
  sendBookmarks(): void {
    for (const w of this.#watchers) if (w.bookmarks) this.#bookmark(w);
  }

  get resourceVersion(): string {
    return rvString(this.#rv);
  }

  /** A stored object (a deep copy), for assertions. */
  object(plural: string, namespace: string, name: string): LooseObject | undefined {
    const kind = kindOf(plural);
    const stored = this.#objects.get(key(kind, namespace, name));
    return stored ? clone(stored) : undefined;
  }

  objects(plural: string, namespace?: string): LooseObject[] {
    const kind = kindOf(plural);
    return [...this.#objects.entries()]
      .filter(([k]) => k.startsWith(`${kind.plural}.${kind.group}/${namespace === undefined ? '' : `${namespace}/`}`))
      .map(([, v]) => clone(v));
  }

  /** Writes an object's status directly, as the owning controller would (kubelet, deployment controller). */
  setStatus(plural: string, namespace: string, name: string, status: unknown): void {
    const kind = kindOf(plural);
    const k = key(kind, namespace, name);
    const stored = this.#objects.get(k);
    if (!stored) throw new Error(`no ${plural} ${namespace}/${name}`);
    this.#store(kind, k, { ...clone(stored), status: clone(status) }, 'MODIFIED');
  }

  // ---- HTTP ----

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const method = req.method ?? 'GET';
    const query = url.searchParams;
    const watch = query.get('watch') === 'true' || query.get('watch') === '1';
    this.requests.push({ method, path: url.pathname, query: url.search, watch });
    const failure = this.#failures.find((f) => f.method === method && f.path.test(url.pathname));
    if (failure) {
      failure.times -= 1;
      if (failure.times <= 0) this.#failures.splice(this.#failures.indexOf(failure), 1);
      await readBody(req);
      return sendStatus(res, failure.status, 'InternalError', `injected failure ${failure.status}`);
    }
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const hang = this.#hangs.find(
      (h) => h.method === method && h.path.test(url.pathname) && (h.token === undefined || h.token === token),
    );
    if (hang) {
      hang.times -= 1;
      if (hang.times <= 0) this.#hangs.splice(this.#hangs.indexOf(hang), 1);
      await readBody(req);
      this.#hung.add(res);
      res.on('close', () => this.#hung.delete(res));
      return;
    }
    if (watch && this.rejectWatches !== undefined)
      return sendStatus(res, this.rejectWatches, 'ServiceUnavailable', 'watches are being rejected');
    if (
      method === 'GET' &&
      (url.pathname === '/api' ||
        url.pathname.startsWith('/api/') ||
        url.pathname === '/apis' ||
        url.pathname.startsWith('/apis/'))
    ) {
      const discovery = discoveryDocument(url.pathname, this.#options.prometheusOperator === true);
      if (discovery) return sendJson(res, 200, discovery);
    }
    const route = parsePath(url.pathname);
    if (!route) return sendStatus(res, 404, 'NotFound', `the server could not find the requested resource (${url.pathname})`);
    const { kind, namespace, name, subresource } = route;
    const body = await readBody(req);
    const refusal = this.#authorize(token, [
      { verb: verbOf(method, name, watch), group: kind.group, resource: kind.plural, subresource, name, namespace },
    ]);
    if (refusal) return sendStatus(res, 403, 'Forbidden', refusal.message, [], refusal.details);
    try {
      if (method === 'GET' && name === undefined) {
        if (watch) return this.#watch(kind, namespace, query, res);
        return sendJson(res, 200, this.#list(kind, namespace, query));
      }
      if (method === 'POST' && name === undefined && namespace !== undefined) {
        return sendJson(res, 201, this.#create(kind, namespace, parseJson(body)));
      }
      if (name === undefined || namespace === undefined)
        throw new FakeApiError(405, 'MethodNotAllowed', `${method} not allowed here`);
      const k = key(kind, namespace, name);
      switch (method) {
        case 'GET':
          return sendJson(res, 200, this.#get(kind, k, namespace, name));
        case 'PUT':
          return sendJson(res, 200, this.#update(kind, k, namespace, name, parseJson(body), subresource));
        case 'PATCH': {
          const type = (req.headers['content-type'] ?? '').split(';')[0]?.trim() ?? '';
          return sendJson(res, 200, this.#patch(kind, k, namespace, name, type, parseJson(body), subresource));
        }
        case 'DELETE':
          return sendJson(res, 200, this.#deleteObject(kind, k, deleteOptions(query, body ? parseJson(body) : {})));
      }
      throw new FakeApiError(405, 'MethodNotAllowed', `${method} not allowed`);
    } catch (error) {
      if (error instanceof FakeApiError) return sendStatus(res, error.code, error.reason, error.message, error.causes);
      throw error;
    }
  }

  /** The first of `requests` RBAC refuses to the token's service account, as kube-apiserver words it; none for other tokens. */
  #authorize(token: string | undefined, requests: RequestAttributes[]): { message: string; details: Json } | undefined {
    const user = token === undefined ? undefined : this.#users.get(token);
    if (user === undefined) return undefined;
    const refused = requests.find((request) => !this.#rbac.allows(user, request));
    if (!refused) return undefined;
    this.forbidden.push({ ...refused, user });
    return {
      message: forbiddenMessage(user, refused),
      details: { ...(refused.name !== undefined ? { name: refused.name } : {}), group: refused.group, kind: refused.resource },
    };
  }

  #list(kind: Kind, namespace: string | undefined, query: URLSearchParams): Json {
    const selector = parseSelector(query.get('labelSelector') ?? '');
    const fieldName = parseFieldName(query.get('fieldSelector') ?? '');
    const items = this.#matching(kind, namespace, selector, fieldName);
    return {
      kind: `${kind.kind}List`,
      apiVersion: apiVersion(kind),
      metadata: { resourceVersion: rvString(this.#rv) },
      items,
    };
  }

  #matching(kind: Kind, namespace: string | undefined, selector: Selector, fieldName: string | undefined): Json[] {
    const prefix = `${kind.plural}.${kind.group}/${namespace === undefined ? '' : `${namespace}/`}`;
    return [...this.#objects.entries()]
      .filter(
        ([k, o]) => k.startsWith(prefix) && selector(labelsOf(o)) && (fieldName === undefined || meta(o)['name'] === fieldName),
      )
      .sort(([a], [b]) => (a < b ? -1 : 1))
      .map(([, o]) => clone(o));
  }

  #watch(kind: Kind, namespace: string | undefined, query: URLSearchParams, res: ServerResponse): void {
    const selector = parseSelector(query.get('labelSelector') ?? '');
    const fieldName = parseFieldName(query.get('fieldSelector') ?? '');
    const from = query.get('resourceVersion');
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = {
      kind,
      namespace,
      selector,
      fieldName,
      bookmarks: query.get('allowWatchBookmarks') === 'true',
      res,
      timer: undefined,
    };
    if (from !== null && from !== '' && from !== '0') {
      const rv = rvNumber(from);
      if (!Number.isFinite(rv) || rv < this.#compactedRv) {
        writeEvent(res, {
          type: 'ERROR',
          object: {
            kind: 'Status',
            apiVersion: 'v1',
            metadata: {},
            status: 'Failure',
            message: `too old resource version: ${from} (${this.#compactedRv})`,
            reason: 'Expired',
            code: 410,
          },
        });
        res.end();
        return;
      }
      for (const event of this.#events) {
        if (event.rv > rv && event.kind === kind && this.#visible(w, event.object))
          writeEvent(res, { type: event.type, object: event.object });
      }
    } else {
      for (const object of this.#matching(kind, namespace, selector, fieldName)) writeEvent(res, { type: 'ADDED', object });
    }
    this.#watchers.add(w);
    if (w.bookmarks) w.timer = setInterval(() => this.#bookmark(w), this.#options.bookmarkIntervalMs ?? 1000);
    const timeoutSeconds = Number(query.get('timeoutSeconds'));
    let endTimer: NodeJS.Timeout | undefined;
    if (Number.isFinite(timeoutSeconds) && timeoutSeconds > 0)
      endTimer = setTimeout(() => this.#closeWatcher(w), timeoutSeconds * 1000);
    res.on('close', () => {
      clearTimeout(endTimer);
      clearInterval(w.timer);
      this.#watchers.delete(w);
    });
  }

  #send(w: Watcher, event: { type: string; object: unknown }): void {
    if (this.#held) this.#held.push(() => writeEvent(w.res, event));
    else writeEvent(w.res, event);
  }

  #bookmark(w: Watcher): void {
    this.#send(w, {
      type: 'BOOKMARK',
      object: { kind: w.kind.kind, apiVersion: apiVersion(w.kind), metadata: { resourceVersion: rvString(this.#rv) } },
    });
  }

  #closeWatcher(w: Watcher): void {
    clearInterval(w.timer);
    this.#watchers.delete(w);
    w.res.end();
  }

  #visible(w: Watcher, object: Json): boolean {
    const m = meta(object);
    if (w.namespace !== undefined && m['namespace'] !== w.namespace) return false;
    if (w.fieldName !== undefined && m['name'] !== w.fieldName) return false;
    return w.selector(labelsOf(object));
  }

  #get(kind: Kind, k: string, namespace: string, name: string): Json {
    const stored = this.#objects.get(k);
    if (!stored) throw notFound(kind, name);
    void namespace;
    return clone(stored);
  }

  #create(kind: Kind, namespace: string, input: Json): Json {
    const m = { ...meta(input) };
    const name = m['name'];
    if (typeof name !== 'string' || name === '')
      throw new FakeApiError(422, 'Invalid', 'metadata.name: Required value', [
        { field: 'metadata.name', message: 'Required value' },
      ]);
    if (m['namespace'] !== undefined && m['namespace'] !== namespace)
      throw new FakeApiError(
        400,
        'BadRequest',
        'the namespace of the provided object does not match the namespace sent on the request',
      );
    const k = key(kind, namespace, name);
    if (this.#objects.has(k))
      throw new FakeApiError(
        409,
        'AlreadyExists',
        `${kind.plural}${kind.group ? `.${kind.group}` : ''} "${name}" already exists`,
      );
    if (m['resourceVersion'] !== undefined && m['resourceVersion'] !== '')
      throw new FakeApiError(500, 'InternalError', 'resourceVersion should not be set on objects to be created');
    let object: Json = { ...clone(input), apiVersion: apiVersion(kind), kind: kind.kind };
    if (kind.statusSubresource) delete object['status'];
    object['metadata'] = {
      ...m,
      namespace,
      uid: randomUUID(),
      creationTimestamp: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
      ...(kind.generation ? { generation: 1 } : {}),
    };
    delete (object['metadata'] as Json)['deletionTimestamp'];
    this.#decode(kind, object);
    object = this.#default(kind, object, undefined);
    this.#defaultOnCreate(kind, object);
    object = this.#admit(kind, object);
    this.#validate(kind, object);
    const created = this.#store(kind, k, object, 'ADDED');
    if (this.simulateDeployments && kind.plural === 'pods') setTimeout(() => this.#startPod(k), this.deploymentSyncDelayMs);
    return created;
  }

  /** The scheduler and kubelet in small for a pod created directly (not by a ReplicaSet): it runs. */
  #startPod(podKey: string): void {
    const pod = this.#objects.get(podKey);
    if (!pod || meta(pod)['deletionTimestamp'] !== undefined || !this.#server?.listening) return;
    const phase = (pod['status'] as Json | undefined)?.['phase'];
    if (phase !== undefined && phase !== 'Pending') return; // a test set its status itself
    const containers = (((pod['spec'] as Json)['containers'] as Json[] | undefined) ?? []).map((c) => ({
      name: String(c['name']),
      image: c['image'],
    }));
    const next = { ...clone(pod), status: { ...runningStatus(containers, nowSeconds()), podIP: this.#allocatePodIP() } };
    this.#store(kindOf('pods'), podKey, next, 'MODIFIED');
  }

  #update(kind: Kind, k: string, namespace: string, name: string, input: Json, subresource: string | undefined): Json {
    const stored = this.#objects.get(k);
    if (!stored) throw notFound(kind, name);
    const rv = meta(input)['resourceVersion'];
    if (rv !== undefined && rv !== '' && rv !== meta(stored)['resourceVersion']) throw conflict(kind, name);
    if (meta(input)['name'] !== undefined && meta(input)['name'] !== name)
      throw new FakeApiError(400, 'BadRequest', 'the name of the object does not match the name on the URL');
    return this.#write(kind, k, stored, clone(input), subresource);
  }

  #patch(
    kind: Kind,
    k: string,
    namespace: string,
    name: string,
    type: string,
    patch: unknown,
    subresource: string | undefined,
  ): Json {
    const stored = this.#objects.get(k);
    if (!stored) throw notFound(kind, name);
    let next: Json;
    if (type === 'application/json-patch+json') {
      if (!Array.isArray(patch)) throw new FakeApiError(400, 'BadRequest', 'a JSON patch must be an array');
      next = applyJsonPatch(clone(stored), patch as JsonPatchOp[]) as Json;
    } else if (type === 'application/merge-patch+json' || type === 'application/strategic-merge-patch+json') {
      next = mergePatch(clone(stored), patch) as Json;
    } else {
      throw new FakeApiError(
        415,
        'UnsupportedMediaType',
        `the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json (got ${type})`,
      );
    }
    const rv = meta(next)['resourceVersion'];
    if (rv !== meta(stored)['resourceVersion']) throw conflict(kind, name);
    void namespace;
    return this.#write(kind, k, stored, next, subresource);
  }

  /** PUT and PATCH end here: subresource rules, finalizer rules, generation, admission. */
  #write(kind: Kind, k: string, stored: Json, input: Json, subresource: string | undefined): Json {
    let next: Json;
    const storedMeta = meta(stored);
    if (subresource === 'status') {
      if (!kind.statusSubresource) throw new FakeApiError(404, 'NotFound', 'no status subresource');
      next = { ...clone(stored), status: clone(input['status']) };
      if (input['status'] === undefined) delete next['status'];
    } else if (subresource !== undefined) {
      throw new FakeApiError(404, 'NotFound', `no ${subresource} subresource`);
    } else {
      next = { ...input, apiVersion: apiVersion(kind), kind: kind.kind };
      if (kind.statusSubresource) {
        if (stored['status'] === undefined) delete next['status'];
        else next['status'] = clone(stored['status']);
      }
      // Server-owned metadata cannot be changed by a client.
      const m = { ...meta(input) };
      for (const f of ['uid', 'creationTimestamp', 'namespace', 'name', 'deletionTimestamp', 'generation']) {
        if (storedMeta[f] === undefined) delete m[f];
        else m[f] = storedMeta[f];
      }
      if (storedMeta['deletionTimestamp'] !== undefined) {
        const before = new Set((storedMeta['finalizers'] as string[] | undefined) ?? []);
        const added = ((m['finalizers'] as string[] | undefined) ?? []).filter((f) => !before.has(f));
        if (added.length > 0)
          throw new FakeApiError(
            422,
            'Invalid',
            `Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers ${JSON.stringify(added)}`,
          );
      }
      next['metadata'] = m;
      this.#decode(kind, next);
      next = this.#default(kind, next, stored);
      if (kind.generation && JSON.stringify(stripMetaStatus(next)) !== JSON.stringify(stripMetaStatus(stored))) {
        (next['metadata'] as Json)['generation'] = Number(storedMeta['generation'] ?? 1) + 1;
      }
      next = this.#admit(kind, next);
      this.#validate(kind, next);
      this.#checkImmutable(kind, stored, next);
    }
    if (storedMeta['deletionTimestamp'] !== undefined && this.#deletionDone(kind, k, next)) {
      this.#remove(kind, k, next);
      return next;
    }
    return this.#store(kind, k, next, 'MODIFIED');
  }

  /** Admission that acts on create only, as the real plugins do. */
  #defaultOnCreate(kind: Kind, object: Json): void {
    if (kind.plural === 'ingresses' && this.defaultIngressClass !== undefined) {
      const spec = ((object['spec'] as Json | undefined) ?? {}) as Json;
      const annotated = ((meta(object)['annotations'] as Json | undefined) ?? {})['kubernetes.io/ingress.class'] !== undefined;
      if (spec['ingressClassName'] === undefined && !annotated)
        object['spec'] = { ...spec, ingressClassName: this.defaultIngressClass };
    }
  }

  /** The built-in kinds' defaults (pkg/apis/*\/v1/defaults.go), on every write; a Service's clusterIP allocated once. */
  #default(kind: Kind, object: Json, previous: Json | undefined): Json {
    return defaultBuiltIn(kind.plural, object, {
      previous,
      allocateClusterIP: () => {
        this.#clusterIPs += 1;
        return `10.96.${Math.floor(this.#clusterIPs / 250)}.${(this.#clusterIPs % 250) + 2}`;
      },
      defaultStorageClass: this.defaultStorageClass,
    });
  }

  /** Built-in kinds against their OpenAPI models and the server's field rules: 422 Invalid, one cause per field. */
  #validate(kind: Kind, object: Json): void {
    const causes = validateBuiltIn(kind.plural, object);
    if (causes.length > 0) throw invalid(kind, String(meta(object)['name'] ?? ''), causes);
  }

  /** Fields the server refuses to change once set. */
  #checkImmutable(kind: Kind, stored: Json, next: Json): void {
    const at = (object: Json, path: string[]) => path.reduce<unknown>((node, part) => (node as Json | undefined)?.[part], object);
    const fields: Record<string, string[][]> = {
      services: [['spec', 'clusterIP']],
      deployments: [['spec', 'selector']],
      persistentvolumeclaims: [
        ['spec', 'accessModes'],
        ['spec', 'storageClassName'],
        ['spec', 'volumeMode'],
      ],
    };
    const causes = (fields[kind.plural] ?? [])
      .filter((path) => JSON.stringify(at(stored, path)) !== JSON.stringify(at(next, path)))
      .map((path) => ({ field: path.join('.'), message: 'Invalid value: field is immutable' }));
    if (causes.length > 0) throw invalid(kind, String(meta(next)['name'] ?? ''), causes);
  }

  /** The body as the real server decodes it: a time it cannot parse is a 400 before any validation. */
  #decode(kind: Kind, object: Json): void {
    const problem = decodeError(kind.plural, kind.kind, object);
    if (problem) throw new FakeApiError(400, 'BadRequest', problem);
  }

  #admit(kind: Kind, object: Json): Json {
    const admit = this.#options.admit?.[kind.plural];
    return admit ? admit(object) : object;
  }

  #store(kind: Kind, k: string, object: Json, type: 'ADDED' | 'MODIFIED'): Json {
    this.#rv += 1;
    (object['metadata'] as Json)['resourceVersion'] = rvString(this.#rv);
    this.#objects.set(k, object);
    this.#emit(kind, type, object);
    const result = clone(object);
    // The Deployment controller works from what it reads later, not from this write.
    if (this.simulateDeployments && kind.plural === 'deployments') this.#scheduleSync(k);
    return result;
  }

  // ---- deletion: grace periods, finalizers, garbage collection by owner reference ----

  /**
   * DELETE as kube-apiserver and the garbage collector answer it together:
   * - a pod is deleted gracefully: Terminating (deletionTimestamp, deletionGracePeriodSeconds from
   *   the request or its spec's terminationGracePeriodSeconds, 30 by default) until its kubelet
   *   has stopped it, a grace period scaled down to `podGracePeriodMs`; 0 deletes it at once;
   * - an object with finalizers only gets a deletionTimestamp (and a generation bump, where the
   *   kind keeps one) and goes when the last finalizer is removed;
   * - propagationPolicy: `Background` (the default) deletes the object now and its dependents
   *   (objects whose ownerReferences name it) after it; `Foreground` adds the finalizer
   *   `foregroundDeletion`: the object stays, Terminating, until every dependent that blocks its
   *   deletion (blockOwnerDeletion) is gone, the dependents deleted in the foreground too;
   *   `Orphan` adds `orphan`: the dependents lose their reference to it and stay.
   */
  #deleteObject(kind: Kind, k: string, options: DeleteOptions): Json {
    const stored = this.#objects.get(k);
    if (!stored) throw notFound(kind, k.slice(k.lastIndexOf('/') + 1));
    const pre = options.preconditions ?? {};
    const name = String(meta(stored)['name']);
    if (pre['resourceVersion'] !== undefined && pre['resourceVersion'] !== meta(stored)['resourceVersion'])
      throw conflict(kind, name);
    if (pre['uid'] !== undefined && pre['uid'] !== meta(stored)['uid']) throw conflict(kind, name);
    const storedMeta = meta(stored);
    const finalizers = [...((storedMeta['finalizers'] as string[] | undefined) ?? [])];
    const propagation = options.propagationPolicy ?? 'Background';
    if (storedMeta['deletionTimestamp'] !== undefined) return clone(stored); // already on its way
    if (propagation === 'Foreground' && !finalizers.includes(FOREGROUND)) finalizers.push(FOREGROUND);
    if (propagation === 'Orphan' && !finalizers.includes(ORPHAN)) finalizers.push(ORPHAN);
    const grace =
      kind.plural === 'pods'
        ? (options.gracePeriodSeconds ??
          Number(((stored['spec'] as Json | undefined) ?? {})['terminationGracePeriodSeconds'] ?? 30))
        : 0;
    if (finalizers.length === 0 && grace === 0) {
      this.#remove(kind, k, clone(stored));
      return {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Success',
        details: { name, kind: kind.plural, uid: storedMeta['uid'] },
      };
    }
    const next = clone(stored);
    const m = next['metadata'] as Json;
    m['deletionTimestamp'] = nowSeconds();
    m['deletionGracePeriodSeconds'] = grace;
    if (finalizers.length > 0) m['finalizers'] = finalizers;
    if (kind.generation) m['generation'] = Number(m['generation'] ?? 1) + 1;
    const result = this.#store(kind, k, next, 'MODIFIED');
    if (kind.plural === 'pods' && grace > 0) setTimeout(() => this.#kubeletStopped(k), this.podGracePeriodMs);
    this.#scheduleGarbageCollection();
    return result;
  }

  /**
   * A Terminating object goes when no finalizer holds it, and a pod only once its kubelet has also
   * stopped it (its grace period over), whichever comes last.
   */
  #deletionDone(kind: Kind, k: string, object: Json): boolean {
    if (((meta(object)['finalizers'] as string[] | undefined) ?? []).length > 0) return false;
    return kind.plural !== 'pods' || Number(meta(object)['deletionGracePeriodSeconds'] ?? 0) === 0 || this.#stoppedPods.has(k);
  }

  /** The next pod address of the pod network (10.244.0.0/16, as kubeadm's default). */
  #allocatePodIP(): string {
    this.#podIPs += 1;
    return `10.244.${Math.floor(this.#podIPs / 250)}.${(this.#podIPs % 250) + 2}`;
  }

  /** The kubelets are slow to stop containers: Terminating pods stay until `releaseKubelet()`. */
  holdKubelet(): void {
    this.#kubeletHeld ??= [];
  }

  releaseKubelet(): void {
    const held = this.#kubeletHeld ?? [];
    this.#kubeletHeld = undefined;
    for (const podKey of held) this.#kubeletStopped(podKey);
  }

  /** The kubelet has stopped a Terminating pod: it goes once no finalizer holds it. */
  #kubeletStopped(podKey: string): void {
    if (this.#kubeletHeld) {
      this.#kubeletHeld.push(podKey);
      return;
    }
    const pod = this.#objects.get(podKey);
    if (!pod || meta(pod)['deletionTimestamp'] === undefined) return;
    this.#stoppedPods.add(podKey);
    if (this.#deletionDone(kindOf('pods'), podKey, pod)) this.#remove(kindOf('pods'), podKey, clone(pod));
  }

  #scheduleGarbageCollection(): void {
    if (this.#gcQueued) return;
    this.#gcQueued = true;
    setTimeout(() => {
      this.#gcQueued = false;
      if (this.#server?.listening) this.#collectGarbage();
    }, 1);
  }

  /** One pass of the garbage collector over every object; passes repeat while they change something. */
  #collectGarbage(): void {
    for (let pass = 0; pass < 10; pass++) {
      let changed = false;
      const all = [...this.#objects.entries()].map(([k, object]) => ({ k, object, kind: kindOfKey(k) }));
      const uids = new Set(all.map(({ object }) => String(meta(object)['uid'])));
      const dependentsOf = (uid: string) =>
        all.filter(({ object }) => ownerReferencesOf(object).some((ref) => ref['uid'] === uid));
      for (const { k, object, kind } of all) {
        const m = meta(object);
        const finalizers = (m['finalizers'] as string[] | undefined) ?? [];
        const uid = String(m['uid']);
        if (m['deletionTimestamp'] !== undefined && finalizers.includes(ORPHAN)) {
          for (const dependent of dependentsOf(uid)) {
            const next = clone(dependent.object);
            (next['metadata'] as Json)['ownerReferences'] = ownerReferencesOf(next).filter((ref) => ref['uid'] !== uid);
            this.#store(dependent.kind, dependent.k, next, 'MODIFIED');
          }
          this.#dropFinalizer(kind, k, ORPHAN);
          changed = true;
        } else if (m['deletionTimestamp'] !== undefined && finalizers.includes(FOREGROUND)) {
          const dependents = dependentsOf(uid);
          for (const dependent of dependents) {
            if (meta(dependent.object)['deletionTimestamp'] === undefined) {
              this.#deleteObject(dependent.kind, dependent.k, { propagationPolicy: 'Foreground' });
              changed = true;
            }
          }
          const blocking = dependents.filter(({ object: d }) =>
            ownerReferencesOf(d).some((ref) => ref['uid'] === uid && ref['blockOwnerDeletion'] === true),
          );
          if (blocking.length === 0) {
            this.#dropFinalizer(kind, k, FOREGROUND);
            changed = true;
          }
        } else if (m['deletionTimestamp'] === undefined) {
          const refs = ownerReferencesOf(object);
          // Every owner gone: the dependent goes too (in the background).
          if (refs.length > 0 && refs.every((ref) => !uids.has(String(ref['uid'])))) {
            this.#deleteObject(kind, k, { propagationPolicy: 'Background' });
            changed = true;
          }
        }
      }
      if (!changed) return;
    }
    this.#scheduleGarbageCollection();
  }

  #dropFinalizer(kind: Kind, k: string, finalizer: string): void {
    const stored = this.#objects.get(k);
    if (!stored) return;
    const next = clone(stored);
    const left = ((meta(next)['finalizers'] as string[] | undefined) ?? []).filter((f) => f !== finalizer);
    (next['metadata'] as Json)['finalizers'] = left;
    if (this.#deletionDone(kind, k, next)) this.#remove(kind, k, next);
    else this.#store(kind, k, next, 'MODIFIED');
  }

  // ---- a Deployment controller, a ReplicaSet controller and a kubelet, in small ----

  /**
   * Like the real controller, a sync is queued per Deployment and runs later on whatever the
   * Deployment is then: writes in quick succession (replicas 1 -> 0 -> 1) merge into one sync
   * that sees only the last, so nothing happens. Each pod template is a ReplicaSet the
   * Deployment owns (named by the template's hash, as `pod-template-hash`), each pod is owned by
   * its ReplicaSet, so deleting a Deployment takes its ReplicaSets and pods with it through the
   * garbage collector. Template changes roll out by the strategy: `Recreate` scales the old
   * ReplicaSets to 0 and the new one up only once none of their pods is left (they terminate
   * within their grace period); `RollingUpdate` scales the new one up first and the old ones
   * down once its pod is ready.
   */
  #scheduleSync(deploymentKey: string): void {
    if (this.#syncQueued.has(deploymentKey)) return;
    this.#syncQueued.add(deploymentKey);
    if (this.#controllerHeld) return; // runs on release
    setTimeout(() => this.#runSync(deploymentKey), this.deploymentSyncDelayMs);
  }

  #runSync(deploymentKey: string): void {
    if (this.#controllerHeld) return;
    this.#syncQueued.delete(deploymentKey);
    if (this.#server?.listening && this.simulateDeployments) this.#syncDeployment(deploymentKey);
  }

  /** The Deployment controller stops syncing (busy, or behind on its watch); writes meanwhile merge. */
  holdDeploymentController(): void {
    this.#controllerHeld = true;
  }

  /** It catches up: one sync per Deployment written meanwhile, on what each is now. */
  releaseDeploymentController(): void {
    this.#controllerHeld = false;
    for (const deploymentKey of [...this.#syncQueued]) this.#runSync(deploymentKey);
  }

  /** Objects of `plural` in `namespace` whose controller (ownerReference with controller: true) has `uid`. */
  #controlledBy(plural: string, namespace: string, uid: unknown): Array<{ k: string; object: Json }> {
    const kind = kindOf(plural);
    const prefix = `${kind.plural}.${kind.group}/${namespace}/`;
    return [...this.#objects.entries()]
      .filter(
        ([k, object]) =>
          k.startsWith(prefix) && ownerReferencesOf(object).some((r) => r['uid'] === uid && r['controller'] === true),
      )
      .map(([k, object]) => ({ k, object }));
  }

  #syncDeployment(deploymentKey: string): void {
    const deployment = this.#objects.get(deploymentKey);
    // Being deleted: the garbage collector takes its ReplicaSets and their pods.
    if (!deployment || meta(deployment)['deletionTimestamp'] !== undefined) return;
    const namespace = String(meta(deployment)['namespace']);
    const spec = (deployment['spec'] as Json | undefined) ?? {};
    const template = (spec['template'] as Json | undefined) ?? {};
    const replicas = Number(spec['replicas'] ?? 1);
    const hash = createHash('sha256').update(JSON.stringify(template)).digest('hex').slice(0, 10);
    const sets = this.#controlledBy('replicasets', namespace, meta(deployment)['uid']);
    const current =
      sets.find(({ object }) => labelsOf(object)['pod-template-hash'] === hash) ??
      this.#createReplicaSet(deployment, template, hash);
    const old = sets.filter((set) => set.k !== current.k);
    const podsOf = (set: { object: Json }, live = false) =>
      this.#controlledBy('pods', namespace, meta(set.object)['uid']).filter(
        ({ object }) => !live || meta(object)['deletionTimestamp'] === undefined,
      );
    if (((spec['strategy'] as Json | undefined)?.['type'] ?? 'RollingUpdate') === 'Recreate') {
      for (const set of old) this.#scaleReplicaSet(set.k, 0);
      // New pods only once every old one is gone, terminating ones included.
      const oldLeft = old.some((set) => podsOf(set).length > 0);
      this.#scaleReplicaSet(current.k, oldLeft ? 0 : replicas);
    } else {
      this.#scaleReplicaSet(current.k, replicas);
      const readyNew = podsOf(current, true).filter(({ object }) => podReady(object)).length;
      if (readyNew >= Math.min(1, replicas)) for (const set of old) this.#scaleReplicaSet(set.k, 0);
    }
    for (const set of [current, ...old]) this.#syncReplicaSet(deploymentKey, set.k);
    this.#writeDeploymentStatus(deploymentKey, hash);
  }

  #createReplicaSet(deployment: Json, template: Json, hash: string): { k: string; object: Json } {
    const kind = kindOf('replicasets');
    const namespace = String(meta(deployment)['namespace']);
    const name = `${String(meta(deployment)['name'])}-${hash}`;
    const k = key(kind, namespace, name);
    const templateMeta = (template['metadata'] as Json | undefined) ?? {};
    const labels: Json = { ...((templateMeta['labels'] as Json | undefined) ?? {}), 'pod-template-hash': hash };
    const selector =
      ((((deployment['spec'] as Json)['selector'] as Json | undefined) ?? {})['matchLabels'] as Json | undefined) ?? {};
    const object: Json = {
      apiVersion: 'apps/v1',
      kind: 'ReplicaSet',
      metadata: {
        name,
        namespace,
        uid: randomUUID(),
        creationTimestamp: nowSeconds(),
        generation: 1,
        labels,
        ownerReferences: [controllerReference(deployment, 'apps/v1', 'Deployment')],
      },
      spec: {
        replicas: 0,
        selector: { matchLabels: { ...selector, 'pod-template-hash': hash } },
        template: { ...template, metadata: { ...templateMeta, labels } },
      },
    };
    this.#store(kind, k, object, 'ADDED');
    return { k, object: this.#objects.get(k) ?? object };
  }

  #scaleReplicaSet(setKey: string, replicas: number): void {
    const set = this.#objects.get(setKey);
    if (!set || Number((set['spec'] as Json)['replicas'] ?? 0) === replicas) return;
    const next = clone(set);
    (next['spec'] as Json)['replicas'] = replicas;
    (next['metadata'] as Json)['generation'] = Number(meta(next)['generation'] ?? 1) + 1;
    this.#store(kindOf('replicasets'), setKey, next, 'MODIFIED');
  }

  /** The ReplicaSet controller: as many live pods as it wants, the newest deleted first. */
  #syncReplicaSet(deploymentKey: string, setKey: string): void {
    const set = this.#objects.get(setKey);
    if (!set || meta(set)['deletionTimestamp'] !== undefined) return;
    const namespace = String(meta(set)['namespace']);
    const live = this.#controlledBy('pods', namespace, meta(set)['uid']).filter(
      ({ object }) => meta(object)['deletionTimestamp'] === undefined,
    );
    const want = Number((set['spec'] as Json)['replicas'] ?? 0);
    for (const { k } of live.slice(want).reverse()) this.#deleteObject(kindOf('pods'), k, {});
    for (let i = live.length; i < want; i++) this.#createPod(deploymentKey, set);
  }

  #writeDeploymentStatus(deploymentKey: string, hash: string): void {
    const deployment = this.#objects.get(deploymentKey);
    if (!deployment) return;
    const namespace = String(meta(deployment)['namespace']);
    const pods = this.#controlledBy('replicasets', namespace, meta(deployment)['uid'])
      .flatMap((set) => this.#controlledBy('pods', namespace, meta(set.object)['uid']))
      .map(({ object }) => object)
      .filter((pod) => meta(pod)['deletionTimestamp'] === undefined);
    const updated = pods.filter((pod) => labelsOf(pod)['pod-template-hash'] === hash);
    const ready = pods.filter(podReady);
    const replicas = Number((deployment['spec'] as Json | undefined)?.['replicas'] ?? 1);
    const available = ready.length >= replicas;
    const everAvailable = this.#everAvailable.has(deploymentKey) || (available && replicas > 0);
    if (everAvailable) this.#everAvailable.add(deploymentKey);
    const now = nowSeconds();
    const status = {
      observedGeneration: Number(meta(deployment)['generation'] ?? 1),
      replicas: pods.length,
      updatedReplicas: updated.length,
      readyReplicas: ready.length,
      availableReplicas: ready.length,
      conditions: [
        available
          ? {
              type: 'Available',
              status: 'True',
              reason: 'MinimumReplicasAvailable',
              message: 'Deployment has minimum availability.',
            }
          : {
              type: 'Available',
              status: 'False',
              reason: 'MinimumReplicasUnavailable',
              message: 'Deployment does not have minimum availability.',
            },
        // Once the new ReplicaSet was available the rollout counts as done: a pod that crashes
        // later does not make Progressing false (it stays NewReplicaSetAvailable).
        {
          type: 'Progressing',
          status: 'True',
          reason: everAvailable ? 'NewReplicaSetAvailable' : 'ReplicaSetUpdated',
          message: everAvailable ? 'ReplicaSet has successfully progressed.' : 'ReplicaSet is progressing.',
        },
      ].map((c) => ({ ...c, lastUpdateTime: now, lastTransitionTime: now })),
    };
    const previous = deployment['status'] as Json | undefined;
    const same = (a: unknown, b: unknown) => JSON.stringify(strip(a)) === JSON.stringify(strip(b));
    function strip(value: unknown): unknown {
      return JSON.parse(
        JSON.stringify(value ?? {}, (k, v: unknown) => (k === 'lastUpdateTime' || k === 'lastTransitionTime' ? undefined : v)),
      );
    }
    if (same(previous, status)) return;
    this.#rv += 1;
    const next: Json = { ...clone(deployment), status };
    (next['metadata'] as Json)['resourceVersion'] = rvString(this.#rv);
    this.#objects.set(deploymentKey, next);
    this.#emit(kindOf('deployments'), 'MODIFIED', next);
  }

  #createPod(deploymentKey: string, set: Json): void {
    const podKind = kindOf('pods');
    const namespace = String(meta(set)['namespace']);
    const now = nowSeconds();
    const name = `${String(meta(set)['name'])}-${randomUUID().slice(0, 5)}`;
    const podKey = key(podKind, namespace, name);
    const template = ((set['spec'] as Json)['template'] as Json | undefined) ?? {};
    const podSpec = clone((template['spec'] as Json | undefined) ?? {});
    const containers = ((podSpec['containers'] as Json[] | undefined) ?? []).map((c) => ({
      name: String(c['name']),
      image: c['image'],
    }));
    const crashing = this.#crashLooping.get(deploymentKey);
    const labels: Json = { ...((meta(template)['labels'] as Json | undefined) ?? {}) };
    this.#store(
      podKind,
      podKey,
      {
        apiVersion: 'v1',
        kind: 'Pod',
        metadata: {
          name,
          namespace,
          uid: randomUUID(),
          creationTimestamp: now,
          labels,
          ...(meta(template)['annotations'] !== undefined ? { annotations: clone(meta(template)['annotations']) } : {}),
          ownerReferences: [controllerReference(set, 'apps/v1', 'ReplicaSet')],
        },
        spec: podSpec,
        status: {
          ...(crashing ? crashLoopStatus(containers, now, crashing.exitCode, 1) : runningStatus(containers, now)),
          podIP: this.#allocatePodIP(),
        },
      },
      'ADDED',
    );
    const customer = labels['cloud.blytz.customer'];
    if (typeof customer === 'string') {
      const running = this.objects('pods', namespace).filter(
        (p) => p['metadata']['labels']?.['cloud.blytz.customer'] === customer,
      ).length;
      this.#maxPods.set(customer, Math.max(this.#maxPods.get(customer) ?? 0, running));
    }
  }

  /** The Deployment a pod belongs to (pod -> ReplicaSet -> Deployment), as a key. */
  #deploymentOfPod(pod: Json): string | undefined {
    const namespace = String(meta(pod)['namespace']);
    const setRef = ownerReferencesOf(pod).find((r) => r['kind'] === 'ReplicaSet');
    const set = setRef && this.#objects.get(key(kindOf('replicasets'), namespace, String(setRef['name'])));
    const deploymentRef = set && ownerReferencesOf(set).find((r) => r['kind'] === 'Deployment');
    return deploymentRef ? key(kindOf('deployments'), namespace, String(deploymentRef['name'])) : undefined;
  }

  /**
   * Makes the Deployment's pods crash-loop, as a container that exits soon after starting does
   * under the kubelet: not ready, restarted with growing delays (CrashLoopBackOff), last exit code
   * kept. The Deployment loses its ready replica; its Progressing condition does not change.
   */
  crashLoop(namespace: string, deployment: string, exitCode = 1): void {
    const deploymentKey = key(kindOf('deployments'), namespace, deployment);
    this.#crashLooping.set(deploymentKey, { exitCode });
    const now = nowSeconds();
    for (const [podKey, pod] of [...this.#objects.entries()].filter(([k]) => k.startsWith(`pods./${namespace}/`))) {
      if (this.#deploymentOfPod(pod) !== deploymentKey || meta(pod)['deletionTimestamp'] !== undefined) continue;
      const containers = ((((pod['spec'] as Json)['containers'] as Json[] | undefined) ?? []) as Json[]).map((c) => ({
        name: String(c['name']),
        image: c['image'],
      }));
      const podIP = (pod['status'] as Json | undefined)?.['podIP'];
      this.#store(
        kindOf('pods'),
        podKey,
        { ...clone(pod), status: { ...crashLoopStatus(containers, now, exitCode, 3), podIP } },
        'MODIFIED',
      );
    }
    this.#scheduleSync(deploymentKey);
  }

  /** The most pods of one customer (label `cloud.blytz.customer`) that existed at once, terminating ones included. */
  maxPodsAtOnce(customer: string): number {
    return this.#maxPods.get(customer) ?? 0;
  }

  // ---- pods/exec ----

  #upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://x');
    this.requests.push({ method: req.method ?? 'GET', path: url.pathname, query: url.search, watch: false });
    const match = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/exec$/.exec(url.pathname);
    if (!match)
      return refuseUpgrade(socket, 404, 'NotFound', `the server could not find the requested resource (${url.pathname})`);
    const [, namespace = '', podName = ''] = match.map(decodeURIComponent);
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const exec = { group: '', resource: 'pods', subresource: 'exec', name: podName, namespace };
    const refusal = this.#authorize(token, [
      { ...exec, verb: 'get' },
      { ...exec, verb: 'create' },
    ]);
    if (refusal) return refuseUpgrade(socket, 403, 'Forbidden', refusal.message);
    const pod = this.#objects.get(key(kindOf('pods'), namespace, podName));
    if (!pod) return refuseUpgrade(socket, 404, 'NotFound', `pods "${podName}" not found`);
    const containers = (((pod['spec'] as Json | undefined)?.['containers'] as Json[] | undefined) ?? []).map((c) =>
      String(c['name']),
    );
    const container = url.searchParams.get('container') ?? (containers.length === 1 ? containers[0] : undefined);
    if (container === undefined)
      return refuseUpgrade(socket, 400, 'BadRequest', `a container name must be specified for pod ${podName}`);
    if (!containers.includes(container))
      return refuseUpgrade(socket, 400, 'BadRequest', `container ${container} is not valid for pod ${podName}`);
    if ((pod['status'] as Json | undefined)?.['phase'] !== 'Running')
      return refuseUpgrade(socket, 400, 'BadRequest', `pod ${podName} is not running`);
    const command = url.searchParams.getAll('command');
    if (command.length === 0) return refuseUpgrade(socket, 400, 'BadRequest', 'you must specify at least 1 command');
    const wants = {
      stdout: url.searchParams.get('stdout') === 'true',
      stderr: url.searchParams.get('stderr') === 'true',
      stdin: url.searchParams.get('stdin') === 'true',
    };
    const call: FakeExecCall = { namespace, pod: podName, container, command };

    this.#wss.handleUpgrade(req, socket, head, (ws) => {
      this.execCalls.push(call);
      const send = (channel: number, data: string | Buffer) => {
        const bytes = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
        for (let at = 0; at === 0 || at < bytes.length; at += 1 << 20) {
          if (ws.readyState === WebSocket.OPEN)
            ws.send(Buffer.concat([Buffer.from([channel]), bytes.subarray(at, at + (1 << 20))]));
        }
      };
      Promise.resolve()
        .then(() => (wants.stdin ? readStdin(ws).then((stdin) => void (call.stdin = stdin)) : undefined))
        .then(() => this.execHandler(call))
        .then(
          (result) => {
            if (wants.stdout && result.stdout) send(1, result.stdout);
            if (wants.stderr && result.stderr) send(2, result.stderr);
            send(3, JSON.stringify(exitStatus(command, result.exitCode)));
          },
          (error: unknown) =>
            send(
              3,
              JSON.stringify({ metadata: {}, status: 'Failure', reason: 'InternalError', message: (error as Error).message }),
            ),
        )
        .finally(() => ws.close(1000));
    });
  }

  #remove(kind: Kind, k: string, object: Json): void {
    this.#rv += 1;
    (object['metadata'] as Json)['resourceVersion'] = rvString(this.#rv);
    this.#objects.delete(k);
    this.#stoppedPods.delete(k);
    this.#emit(kind, 'DELETED', object);
    // Its dependents may have lost their last owner; a Deployment whose pod is gone may go on.
    this.#scheduleGarbageCollection();
    if (kind.plural === 'pods') {
      const deploymentKey = this.#deploymentOfPod(object);
      if (deploymentKey !== undefined && this.simulateDeployments) this.#scheduleSync(deploymentKey);
    }
  }

  #emit(kind: Kind, type: StoredEvent['type'], object: Json): void {
    const event: StoredEvent = { rv: this.#rv, kind, type, object: clone(object) };
    this.#events.push(event);
    for (const w of this.#watchers) {
      if (w.kind === kind && this.#visible(w, object)) this.#send(w, { type, object: event.object });
    }
  }
}

/**
 * resourceVersions are opaque strings to clients (API conventions): the real server's happen to
 * be decimal, so code comparing them as numbers works there by luck. The fake's are not numbers
 * at all (`v` and base 36), so such code fails here.
 */
function rvString(n: number): string {
  return `v${n.toString(36)}`;
}

function rvNumber(rv: string): number {
  return /^v[0-9a-z]+$/.test(rv) ? parseInt(rv.slice(1), 36) : Number.NaN;
}

const FOREGROUND = 'foregroundDeletion';
const ORPHAN = 'orphan';

interface DeleteOptions {
  propagationPolicy?: 'Background' | 'Foreground' | 'Orphan';
  gracePeriodSeconds?: number;
  preconditions?: Json;
}

/** DeleteOptions from the query (client-node sends propagationPolicy and gracePeriodSeconds there) and the body. */
function deleteOptions(query: URLSearchParams, body: Json): DeleteOptions {
  const policy = query.get('propagationPolicy') ?? body['propagationPolicy'];
  if (policy !== undefined && policy !== null && !['Background', 'Foreground', 'Orphan'].includes(String(policy)))
    throw new FakeApiError(422, 'Invalid', `propagationPolicy: Unsupported value: "${String(policy)}"`);
  const grace = query.get('gracePeriodSeconds') ?? body['gracePeriodSeconds'];
  return {
    ...(policy ? { propagationPolicy: policy as DeleteOptions['propagationPolicy'] & string } : {}),
    ...(grace !== undefined && grace !== null ? { gracePeriodSeconds: Number(grace) } : {}),
    ...(body['preconditions'] ? { preconditions: body['preconditions'] as Json } : {}),
  };
}

/** metav1.Time as the server writes it: RFC3339, whole seconds. */
function nowSeconds(): string {
  return new Date().toISOString().replace(/\.\d+Z$/, 'Z');
}

function ownerReferencesOf(object: Json): Json[] {
  return (meta(object)['ownerReferences'] as Json[] | undefined) ?? [];
}

/** The reference a controller puts on what it creates: it controls it, and blocks its foreground deletion. */
function controllerReference(owner: Json, apiVersion: string, kind: string): Json {
  return { apiVersion, kind, name: meta(owner)['name'], uid: meta(owner)['uid'], controller: true, blockOwnerDeletion: true };
}

function kindOfKey(k: string): Kind {
  const prefix = k.slice(0, k.indexOf('/'));
  const kind = FAKE_KINDS.find((candidate) => `${candidate.plural}.${candidate.group}` === prefix);
  if (!kind) throw new Error(`no kind for ${k}`);
  return kind;
}

function podReady(pod: Json): boolean {
  const conditions = ((pod['status'] as Json | undefined)?.['conditions'] as Json[] | undefined) ?? [];
  return conditions.some((c) => c['type'] === 'Ready' && c['status'] === 'True');
}

function runningStatus(containers: Array<{ name: string; image: unknown }>, now: string): Json {
  return {
    phase: 'Running',
    startTime: now,
    conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: now }],
    containerStatuses: containers.map((c) => ({
      ...c,
      imageID: '',
      ready: true,
      started: true,
      restartCount: 0,
      state: { running: { startedAt: now } },
    })),
  };
}

function crashLoopStatus(
  containers: Array<{ name: string; image: unknown }>,
  now: string,
  exitCode: number,
  restarts: number,
): Json {
  return {
    phase: 'Running',
    startTime: now,
    conditions: [{ type: 'Ready', status: 'False', reason: 'ContainersNotReady', lastTransitionTime: now }],
    containerStatuses: containers.map((c) => ({
      ...c,
      imageID: '',
      ready: false,
      started: false,
      restartCount: restarts,
      state: { waiting: { reason: 'CrashLoopBackOff', message: `back-off restarting failed container ${c.name}` } },
      lastState: { terminated: { exitCode, reason: 'Error', startedAt: now, finishedAt: now } },
    })),
  };
}

function stripMetaStatus(object: Json): unknown {
  const { metadata: _m, status: _s, ...rest } = object;
  return rest;
}

// ---- paths ----

interface Route {
  kind: Kind;
  namespace: string | undefined;
  name: string | undefined;
  subresource: string | undefined;
}

function parsePath(path: string): Route | undefined {
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  let group: string;
  let version: string;
  let rest: string[];
  if (parts[0] === 'api') {
    group = '';
    version = parts[1] ?? '';
    rest = parts.slice(2);
  } else if (parts[0] === 'apis') {
    group = parts[1] ?? '';
    version = parts[2] ?? '';
    rest = parts.slice(3);
  } else {
    return undefined;
  }
  let namespace: string | undefined;
  if (rest[0] === 'namespaces' && rest.length >= 3) {
    namespace = rest[1];
    rest = rest.slice(2);
  }
  const [plural, name, subresource] = rest;
  const kind = FAKE_KINDS.find((k) => k.group === group && k.version === version && k.plural === plural);
  if (!kind) return undefined;
  return { kind, namespace, name, subresource };
}

/**
 * Kinds known to discovery only (so kubectl can map manifests to resources); their objects are
 * answered 404, which is all `kubectl apply --dry-run=client` needs.
 */
const DISCOVERY_ONLY: Array<Pick<Kind, 'group' | 'version' | 'plural' | 'kind' | 'namespaced'>> = [
  { group: '', version: 'v1', plural: 'serviceaccounts', kind: 'ServiceAccount', namespaced: true },
  { group: '', version: 'v1', plural: 'namespaces', kind: 'Namespace', namespaced: false },
  { group: 'rbac.authorization.k8s.io', version: 'v1', plural: 'roles', kind: 'Role', namespaced: true },
  { group: 'rbac.authorization.k8s.io', version: 'v1', plural: 'rolebindings', kind: 'RoleBinding', namespaced: true },
  { group: 'rbac.authorization.k8s.io', version: 'v1', plural: 'clusterroles', kind: 'ClusterRole', namespaced: false },
  {
    group: 'rbac.authorization.k8s.io',
    version: 'v1',
    plural: 'clusterrolebindings',
    kind: 'ClusterRoleBinding',
    namespaced: false,
  },
  {
    group: 'apiextensions.k8s.io',
    version: 'v1',
    plural: 'customresourcedefinitions',
    kind: 'CustomResourceDefinition',
    namespaced: false,
  },
  { group: 'policy', version: 'v1', plural: 'poddisruptionbudgets', kind: 'PodDisruptionBudget', namespaced: true },
];

/** The prometheus-operator's CRDs: known only on a cluster that has them installed. */
const PROMETHEUS_OPERATOR: typeof DISCOVERY_ONLY = [
  { group: 'monitoring.coreos.com', version: 'v1', plural: 'servicemonitors', kind: 'ServiceMonitor', namespaced: true },
  { group: 'monitoring.coreos.com', version: 'v1', plural: 'prometheusrules', kind: 'PrometheusRule', namespaced: true },
];

function discoveryDocument(path: string, prometheusOperator: boolean): Json | undefined {
  const all = [...FAKE_KINDS, ...DISCOVERY_ONLY, ...(prometheusOperator ? PROMETHEUS_OPERATOR : [])];
  if (path === '/api') return { kind: 'APIVersions', versions: ['v1'], serverAddressByClientCIDRs: [] };
  if (path === '/apis') {
    const groups = [...new Set(all.map((k) => k.group).filter(Boolean))];
    return {
      kind: 'APIGroupList',
      apiVersion: 'v1',
      groups: groups.map((name) => {
        const versions = [...new Set(all.filter((k) => k.group === name).map((k) => k.version))].map((v) => ({
          groupVersion: `${name}/${v}`,
          version: v,
        }));
        return { name, versions, preferredVersion: versions[0] };
      }),
    };
  }
  const m = /^\/(?:api\/(v1)|apis\/([^/]+)\/([^/]+))$/.exec(path);
  if (!m) return undefined;
  const group = m[1] ? '' : (m[2] ?? '');
  const version = m[1] ?? m[3] ?? '';
  const kinds = all.filter((k) => k.group === group && k.version === version);
  if (kinds.length === 0) return undefined;
  return {
    kind: 'APIResourceList',
    apiVersion: 'v1',
    groupVersion: group ? `${group}/${version}` : version,
    resources: kinds.map((k) => ({
      name: k.plural,
      singularName: k.kind.toLowerCase(),
      namespaced: k.namespaced,
      kind: k.kind,
      verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
    })),
  };
}

function kindOf(plural: string): Kind {
  const kind = FAKE_KINDS.find((k) => k.plural === plural);
  if (!kind) throw new Error(`the fake API server has no kind ${plural}`);
  return kind;
}

function key(kind: Kind, namespace: string, name: string): string {
  return `${kind.plural}.${kind.group}/${namespace}/${name}`;
}

function apiVersion(kind: Kind): string {
  return kind.group ? `${kind.group}/${kind.version}` : kind.version;
}

// ---- selectors ----

type Selector = (labels: Record<string, string>) => boolean;

/** Kubernetes label selector syntax: `a=b,c!=d,e,!f,g in (x,y),h notin (z)`. */
export function parseSelector(text: string): Selector {
  const terms: Selector[] = [];
  // Split on commas outside parentheses.
  const parts: string[] = [];
  let depth = 0;
  let current = '';
  for (const ch of text) {
    if (ch === '(') depth++;
    if (ch === ')') depth--;
    if (ch === ',' && depth === 0) {
      parts.push(current);
      current = '';
    } else current += ch;
  }
  if (current.trim()) parts.push(current);
  for (const raw of parts.map((p) => p.trim()).filter(Boolean)) {
    let m: RegExpExecArray | null;
    if ((m = /^(\S+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(raw))) {
      const [, k = '', op, list = ''] = m;
      const values = new Set(list.split(',').map((v) => v.trim()));
      terms.push(op === 'in' ? (l) => l[k] !== undefined && values.has(l[k]) : (l) => l[k] === undefined || !values.has(l[k]));
    } else if ((m = /^([^!=\s]+)\s*!=\s*(\S*)$/.exec(raw))) {
      const [, k = '', v = ''] = m;
      terms.push((l) => l[k] !== v);
    } else if ((m = /^([^!=\s]+)\s*==?\s*(\S*)$/.exec(raw))) {
      const [, k = '', v = ''] = m;
      terms.push((l) => l[k] === v);
    } else if ((m = /^!(\S+)$/.exec(raw))) {
      const [, k = ''] = m;
      terms.push((l) => l[k] === undefined);
    } else {
      terms.push((l) => l[raw] !== undefined);
    }
  }
  return (labels) => terms.every((t) => t(labels));
}

function parseFieldName(text: string): string | undefined {
  const m = /^metadata\.name==?(.+)$/.exec(text.trim());
  return m?.[1];
}

// ---- patches ----

function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return clone(patch);
  const out: Json = target !== null && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Json) } : {};
  for (const [k, v] of Object.entries(patch as Json)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

interface JsonPatchOp {
  op: 'add' | 'remove' | 'replace' | 'test' | 'move' | 'copy';
  path: string;
  value?: unknown;
  from?: string;
}

function pointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw new FakeApiError(422, 'Invalid', `bad JSON pointer ${path}`);
  return path
    .slice(1)
    .split('/')
    .map((s) => s.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function resolveParent(doc: unknown, path: string): { parent: Json | unknown[]; last: string } {
  const parts = pointer(path);
  const last = parts.pop();
  if (last === undefined) throw new FakeApiError(422, 'Invalid', 'cannot patch the root');
  let node: unknown = doc;
  for (const part of parts) {
    if (node === null || typeof node !== 'object') throw new FakeApiError(422, 'Invalid', `path ${path} does not exist`);
    node = Array.isArray(node) ? node[Number(part)] : (node as Json)[part];
  }
  if (node === null || typeof node !== 'object') throw new FakeApiError(422, 'Invalid', `path ${path} does not exist`);
  return { parent: node as Json | unknown[], last };
}

function getAt(doc: unknown, path: string): unknown {
  let node: unknown = doc;
  for (const part of pointer(path)) {
    if (node === null || typeof node !== 'object') return undefined;
    node = Array.isArray(node) ? node[Number(part)] : (node as Json)[part];
  }
  return node;
}

function applyJsonPatch(doc: unknown, ops: JsonPatchOp[]): unknown {
  for (const op of ops) {
    switch (op.op) {
      case 'test':
        if (JSON.stringify(getAt(doc, op.path)) !== JSON.stringify(op.value))
          throw new FakeApiError(422, 'Invalid', `test operation failed at ${op.path}`);
        break;
      case 'remove': {
        const { parent, last } = resolveParent(doc, op.path);
        if (Array.isArray(parent)) {
          const i = Number(last);
          if (!(i >= 0 && i < parent.length)) throw new FakeApiError(422, 'Invalid', `path ${op.path} does not exist`);
          parent.splice(i, 1);
        } else {
          if (!(last in parent)) throw new FakeApiError(422, 'Invalid', `path ${op.path} does not exist`);
          delete parent[last];
        }
        break;
      }
      case 'add':
      case 'replace': {
        const { parent, last } = resolveParent(doc, op.path);
        if (Array.isArray(parent)) {
          const i = last === '-' ? parent.length : Number(last);
          if (op.op === 'add') parent.splice(i, 0, clone(op.value));
          else {
            if (!(i >= 0 && i < parent.length)) throw new FakeApiError(422, 'Invalid', `path ${op.path} does not exist`);
            parent[i] = clone(op.value);
          }
        } else {
          if (op.op === 'replace' && !(last in parent)) throw new FakeApiError(422, 'Invalid', `path ${op.path} does not exist`);
          parent[last] = clone(op.value);
        }
        break;
      }
      case 'move':
      case 'copy': {
        const value = getAt(doc, op.from ?? '');
        if (value === undefined) throw new FakeApiError(422, 'Invalid', `path ${op.from ?? ''} does not exist`);
        if (op.op === 'move') applyJsonPatch(doc, [{ op: 'remove', path: op.from ?? '' }]);
        applyJsonPatch(doc, [{ op: 'add', path: op.path, value }]);
        break;
      }
      default:
        throw new FakeApiError(422, 'Invalid', `unknown JSON patch op ${(op as { op: string }).op}`);
    }
  }
  return doc;
}

// ---- helpers ----

function meta(object: Json): Json {
  const m = object['metadata'];
  return m !== null && typeof m === 'object' ? (m as Json) : {};
}

function labelsOf(object: Json): Record<string, string> {
  return (meta(object)['labels'] as Record<string, string> | undefined) ?? {};
}

function clone<T>(value: T): T {
  return value === undefined ? value : (JSON.parse(JSON.stringify(value)) as T);
}

function notFound(kind: Kind, name: string): FakeApiError {
  return new FakeApiError(404, 'NotFound', `${kind.plural}${kind.group ? `.${kind.group}` : ''} "${name}" not found`);
}

/** 422 Invalid as kube-apiserver words it: `Deployment.apps "x" is invalid: [field: message, ...]`. */
function invalid(kind: Kind, name: string, causes: Array<{ field: string; message: string }>): FakeApiError {
  const list = causes.map((c) => `${c.field}: ${c.message}`);
  const what = `${kind.kind}${kind.group ? `.${kind.group}` : ''} "${name}" is invalid: `;
  return new FakeApiError(422, 'Invalid', what + (list.length === 1 ? list[0] : `[${list.join(', ')}]`), causes);
}

function conflict(kind: Kind, name: string): FakeApiError {
  return new FakeApiError(
    409,
    'Conflict',
    `Operation cannot be fulfilled on ${kind.plural}${kind.group ? `.${kind.group}` : ''} "${name}": the object has been modified; please apply your changes to the latest version and try again`,
  );
}

function parseJson(text: string): Json {
  try {
    return JSON.parse(text) as Json;
  } catch {
    throw new FakeApiError(400, 'BadRequest', 'the request body is not JSON');
  }
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

function sendStatus(
  res: ServerResponse,
  code: number,
  reason: string,
  message: string,
  causes: Array<{ field: string; message: string }> = [],
  details: Json = {},
): void {
  const withCauses =
    causes.length > 0
      ? { ...details, causes: causes.map((c) => ({ field: c.field, message: c.message, reason: 'FieldValueInvalid' })) }
      : details;
  sendJson(res, code, {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    ...(Object.keys(withCauses).length > 0 ? { details: withCauses } : {}),
    code,
  });
}

/** The verb kube-apiserver's authorizer sees for an HTTP request. */
function verbOf(method: string, name: string | undefined, watch: boolean): string {
  switch (method) {
    case 'GET':
    case 'HEAD':
      return name !== undefined ? 'get' : watch ? 'watch' : 'list';
    case 'POST':
      return 'create';
    case 'PUT':
      return 'update';
    case 'PATCH':
      return 'patch';
    case 'DELETE':
      return name !== undefined ? 'delete' : 'deletecollection';
    default:
      return method.toLowerCase();
  }
}

function writeEvent(res: ServerResponse, event: { type: string; object: unknown }): void {
  if (!res.writableEnded && !res.destroyed) res.write(`${JSON.stringify(event)}\n`);
}

// ---- OpenAPI v3 (structural schema) validation, as the API server does for custom resources ----

export interface SchemaError {
  field: string;
  message: string;
}

/**
 * Validates `value` against a structural OpenAPI schema the way the API server treats a custom
 * resource under kubectl's strict field validation: defaults filled in first, unknown fields
 * rejected, then type, enum, length (in code points, like Go's rune count) and RE2 patterns
 * (`\x{HHHH}` is read as `\u{HHHH}`). `format` is not checked (zod's own pattern covers email).
 * Returns the defaulted value and every error found.
 */
export function validateOpenApi(schema: Json, value: unknown, field = ''): { value: unknown; errors: SchemaError[] } {
  const errors: SchemaError[] = [];
  const at = (name: string) => (field ? `${field}.${name}` : name);
  const fail = (message: string) => errors.push({ field: field || '(root)', message });
  const type = schema['type'];
  let out = value;
  if (type === 'object') {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      fail('must be an object');
      return { value, errors };
    }
    const obj: Json = { ...(value as Json) };
    const properties = schema['properties'] as Record<string, Json> | undefined;
    const additional = schema['additionalProperties'] as Json | undefined;
    if (properties) {
      for (const [name, child] of Object.entries(properties)) {
        if (obj[name] === undefined && child['default'] !== undefined) obj[name] = clone(child['default']);
      }
    }
    for (const name of (schema['required'] as string[] | undefined) ?? []) {
      if (obj[name] === undefined) errors.push({ field: at(name), message: 'Required value' });
    }
    for (const [name, child] of Object.entries(obj)) {
      const childSchema = properties?.[name] ?? additional;
      if (!childSchema) {
        errors.push({ field: at(name), message: 'unknown field' });
        continue;
      }
      const result = validateOpenApi(childSchema, child, at(name));
      obj[name] = result.value;
      errors.push(...result.errors);
    }
    out = obj;
  } else if (type === 'array') {
    if (!Array.isArray(value)) fail('must be an array');
    else {
      const items = schema['items'] as Json | undefined;
      out = value.map((item, i) => {
        if (!items) return item;
        const result = validateOpenApi(items, item, `${field}[${i}]`);
        errors.push(...result.errors);
        return result.value;
      });
    }
  } else if (type === 'string') {
    if (typeof value !== 'string') fail('must be a string');
    else {
      const length = [...value].length;
      if (typeof schema['maxLength'] === 'number' && length > schema['maxLength'])
        fail(`Too long: may not be longer than ${schema['maxLength']}`);
      if (typeof schema['minLength'] === 'number' && length < schema['minLength'])
        fail(`should be at least ${schema['minLength']} chars long`);
      const patterns = [schema['pattern'], ...((schema['allOf'] as Json[] | undefined) ?? []).map((s) => s['pattern'])];
      for (const pattern of patterns) {
        if (typeof pattern === 'string' && !re2(pattern).test(value)) fail(`should match '${pattern}'`);
      }
    }
  } else if (type === 'integer') {
    if (typeof value !== 'number' || !Number.isInteger(value)) fail('must be an integer');
  } else if (type === 'number') {
    if (typeof value !== 'number') fail('must be a number');
  } else if (type === 'boolean') {
    if (typeof value !== 'boolean') fail('must be a boolean');
  }
  const allowed = schema['enum'] as unknown[] | undefined;
  if (allowed && !allowed.includes(out)) fail(`Unsupported value: ${JSON.stringify(out)}`);
  return { value: out, errors };
}

const re2Cache = new Map<string, RegExp>();
function re2(pattern: string): RegExp {
  let compiled = re2Cache.get(pattern);
  if (!compiled) {
    compiled = new RegExp(pattern.replace(/\\x\{([0-9a-fA-F]+)\}/g, '\\u{$1}'), 'u');
    re2Cache.set(pattern, compiled);
  }
  return compiled;
}

/** Admission for customers.blytz.cloud from a CRD object: defaults and validation from its schema. */
export function crdAdmission(crd: Json): (object: Json) => Json {
  const version = ((crd['spec'] as Json)['versions'] as Json[])[0] as Json;
  const schema = (version['schema'] as Json)['openAPIV3Schema'] as Json;
  return (object) => {
    const { metadata, status, ...rest } = object;
    const result = validateOpenApi(schema, { ...rest, metadata: { name: (metadata as Json)['name'] } });
    if (result.errors.length > 0) {
      throw new FakeApiError(
        422,
        'Invalid',
        `Customer.blytz.cloud "${String((metadata as Json)['name'])}" is invalid: ${result.errors.map((e) => `${e.field}: ${e.message}`).join(', ')}`,
        result.errors,
      );
    }
    return { ...(result.value as Json), metadata, ...(status !== undefined ? { status } : {}) };
  };
}

// ---- pods/exec ----

export interface FakeExecCall {
  namespace: string;
  pod: string;
  container: string;
  command: string[];
  /** What the client sent on stdin, whole (the command runs once the client closed it). */
  stdin?: Buffer;
}

/**
 * The client's stdin: channel 0 frames until it closes the stream, which only v5.channel.k8s.io
 * can say (a frame `255, 0`); with an older protocol a client can only close the socket.
 */
function readStdin(ws: WebSocket): Promise<Buffer> {
  if (ws.protocol !== 'v5.channel.k8s.io') return Promise.reject(new Error('stdin needs v5.channel.k8s.io'));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    const onMessage = (data: Buffer) => {
      if (data[0] === 0) chunks.push(data.subarray(1));
      else if (data[0] === 255 && data[1] === 0) {
        ws.off('message', onMessage);
        resolve(Buffer.concat(chunks));
      }
    };
    ws.on('message', onMessage);
    ws.once('close', () => reject(new Error('the client closed the stream before the end of stdin')));
  });
}

export interface FakeExecResult {
  exitCode: number;
  /** Bytes too (a tar stream), sent in frames of at most 1 MiB. */
  stdout?: string | Buffer;
  stderr?: string;
}

/** The newest stream protocol the client offers that this server speaks (v5 first, like kube-apiserver 1.30+). */
function pickChannelProtocol(offered: Set<string>): string | false {
  return ['v5.channel.k8s.io', 'v4.channel.k8s.io'].find((p) => offered.has(p)) ?? false;
}

/** The Status frame kube-apiserver sends when the command ends. */
function exitStatus(command: string[], exitCode: number): Json {
  if (exitCode === 0) return { metadata: {}, status: 'Success' };
  return {
    metadata: {},
    status: 'Failure',
    message: `command terminated with non-zero exit code: error executing command [${command.join(' ')}], exit code ${exitCode}`,
    reason: 'NonZeroExitCode',
    details: { causes: [{ reason: 'ExitCode', message: String(exitCode) }] },
  };
}

/** An exec that cannot start is answered before the upgrade: an HTTP error with a Status body. */
function refuseUpgrade(socket: Socket, code: number, reason: string, message: string): void {
  const body = JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });
  socket.end(
    `HTTP/1.1 ${code} ${STATUS_CODES[code] ?? ''}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
}
