import { createHash, randomUUID } from 'node:crypto';
import { createServer, STATUS_CODES, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { KubeConfig } from '@kubernetes/client-node';
import { WebSocket, WebSocketServer } from 'ws';

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
 * - finalizers: a delete sets deletionTimestamp; the object goes when the last one is removed;
 * - label selectors (=, ==, !=, in, notin, exists, !exists) and `metadata.name` field selectors;
 * - `pods/<name>/exec` as the real server serves it: a WebSocket upgrade (subprotocol
 *   v5/v4.channel.k8s.io), output on channels 1 and 2, then a Status on channel 3 (a
 *   `NonZeroExitCode` failure carries the exit code); a missing pod or container is refused
 *   before the upgrade with an HTTP error and a Status body.
 *
 * Test hooks: `compact()`, `breakWatches()`, `failNext()`, `setStatus()`, `simulateDeployments`
 * (a stand-in for the Deployment controller, ReplicaSets and the kubelet: ready status and
 * running pods), `execHandler` (what a command run in a pod answers) and a request log.
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
    group: 'networking.k8s.io',
    version: 'v1',
    plural: 'ingresses',
    kind: 'Ingress',
    namespaced: true,
    statusSubresource: true,
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
  #compactedRv = 0;
  #server: Server | undefined;
  #url = '';
  readonly requests: RequestRecord[] = [];
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
  /** Pods made by `simulateDeployments`, by pod key -> their Deployment's key. */
  readonly #podOwners = new Map<string, string>();
  readonly #wss = new WebSocketServer({ noServer: true, handleProtocols: pickChannelProtocol });

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
  kubeConfig(): KubeConfig {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'fake', server: this.#url, skipTLSVerify: true }],
      users: [{ name: 'test', token: 'fake-token' }],
      contexts: [{ name: 'fake', cluster: 'fake', user: 'test', namespace: 'default' }],
      currentContext: 'fake',
    });
    return kc;
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

  /** The next `times` requests matching method and path answer `status` (e.g. 500, 503). */
  failNext(method: string, path: RegExp, status: number, times = 1): void {
    this.#failures.push({ method, path, status, times });
  }

  /** Sends a BOOKMARK to every open bookmark-enabled watch now. */
  sendBookmarks(): void {
    for (const w of this.#watchers) if (w.bookmarks) this.#bookmark(w);
  }

  get resourceVersion(): string {
    return String(this.#rv);
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
    if (watch && this.rejectWatches !== undefined)
      return sendStatus(res, this.rejectWatches, 'ServiceUnavailable', 'watches are being rejected');
    if (
      method === 'GET' &&
      (url.pathname === '/api' ||
        url.pathname.startsWith('/api/') ||
        url.pathname === '/apis' ||
        url.pathname.startsWith('/apis/'))
    ) {
      const discovery = discoveryDocument(url.pathname);
      if (discovery) return sendJson(res, 200, discovery);
    }
    const route = parsePath(url.pathname);
    if (!route) return sendStatus(res, 404, 'NotFound', `the server could not find the requested resource (${url.pathname})`);
    const { kind, namespace, name, subresource } = route;
    const body = await readBody(req);
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
          return sendJson(res, 200, this.#delete(kind, k, namespace, name, body ? parseJson(body) : {}));
      }
      throw new FakeApiError(405, 'MethodNotAllowed', `${method} not allowed`);
    } catch (error) {
      if (error instanceof FakeApiError) return sendStatus(res, error.code, error.reason, error.message, error.causes);
      throw error;
    }
  }

  #list(kind: Kind, namespace: string | undefined, query: URLSearchParams): Json {
    const selector = parseSelector(query.get('labelSelector') ?? '');
    const fieldName = parseFieldName(query.get('fieldSelector') ?? '');
    const items = this.#matching(kind, namespace, selector, fieldName);
    return {
      kind: `${kind.kind}List`,
      apiVersion: apiVersion(kind),
      metadata: { resourceVersion: String(this.#rv) },
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
      const rv = Number(from);
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

  #bookmark(w: Watcher): void {
    writeEvent(w.res, {
      type: 'BOOKMARK',
      object: { kind: w.kind.kind, apiVersion: apiVersion(w.kind), metadata: { resourceVersion: String(this.#rv) } },
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
    object = this.#admit(kind, object);
    return this.#store(kind, k, object, 'ADDED');
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
      if (kind.generation && JSON.stringify(stripMetaStatus(next)) !== JSON.stringify(stripMetaStatus(stored))) {
        m['generation'] = Number(storedMeta['generation'] ?? 1) + 1;
      }
      next = this.#admit(kind, next);
    }
    const finalizers = (meta(next)['finalizers'] as string[] | undefined) ?? [];
    if (storedMeta['deletionTimestamp'] !== undefined && finalizers.length === 0) {
      this.#remove(kind, k, next);
      return next;
    }
    return this.#store(kind, k, next, 'MODIFIED');
  }

  #delete(kind: Kind, k: string, namespace: string, name: string, options: Json): Json {
    const stored = this.#objects.get(k);
    if (!stored) throw notFound(kind, name);
    const pre = (options['preconditions'] as Json | undefined) ?? {};
    if (pre['resourceVersion'] !== undefined && pre['resourceVersion'] !== meta(stored)['resourceVersion'])
      throw conflict(kind, name);
    if (pre['uid'] !== undefined && pre['uid'] !== meta(stored)['uid']) throw conflict(kind, name);
    void namespace;
    const finalizers = (meta(stored)['finalizers'] as string[] | undefined) ?? [];
    if (finalizers.length > 0) {
      if (meta(stored)['deletionTimestamp'] !== undefined) return clone(stored);
      const next = clone(stored);
      (next['metadata'] as Json)['deletionTimestamp'] = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
      (next['metadata'] as Json)['deletionGracePeriodSeconds'] = 0;
      return this.#store(kind, k, next, 'MODIFIED');
    }
    this.#remove(kind, k, clone(stored));
    return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Success', details: { name, kind: kind.plural } };
  }

  #admit(kind: Kind, object: Json): Json {
    const admit = this.#options.admit?.[kind.plural];
    return admit ? admit(object) : object;
  }

  #store(kind: Kind, k: string, object: Json, type: 'ADDED' | 'MODIFIED'): Json {
    this.#rv += 1;
    (object['metadata'] as Json)['resourceVersion'] = String(this.#rv);
    this.#objects.set(k, object);
    this.#emit(kind, type, object);
    const result = clone(object);
    // The simulated status write is current by construction, so this recursion ends after one step.
    if (this.simulateDeployments && kind.plural === 'deployments' && !deploymentStatusCurrent(object))
      this.#simulateDeployment(k);
    return result;
  }

  #simulateDeployment(k: string): void {
    const object = this.#objects.get(k);
    if (!object) return;
    const replicas = Number((object['spec'] as Json | undefined)?.['replicas'] ?? 1);
    const generation = Number(meta(object)['generation'] ?? 1);
    const status = {
      observedGeneration: generation,
      replicas,
      updatedReplicas: replicas,
      readyReplicas: replicas,
      availableReplicas: replicas,
      conditions: [
        {
          type: 'Available',
          status: 'True',
          reason: 'MinimumReplicasAvailable',
          message: 'Deployment has minimum availability.',
        },
        {
          type: 'Progressing',
          status: 'True',
          reason: 'NewReplicaSetAvailable',
          message: 'ReplicaSet has successfully progressed.',
        },
      ],
    };
    this.#store(kindOf('deployments'), k, { ...clone(object), status }, 'MODIFIED');
    this.#simulatePods(k);
  }

  /**
   * The ReplicaSet controller and kubelet in one step: the Deployment's current template runs as
   * `spec.replicas` pods, Running and Ready; pods of an older template or beyond the count go.
   */
  #simulatePods(deploymentKey: string): void {
    const deployment = this.#objects.get(deploymentKey);
    const podKind = kindOf('pods');
    const owned = [...this.#podOwners].filter(([, owner]) => owner === deploymentKey).map(([podKey]) => podKey);
    if (!deployment) {
      for (const podKey of owned) this.#removePod(podKey);
      return;
    }
    const spec = (deployment['spec'] as Json | undefined) ?? {};
    const template = (spec['template'] as Json | undefined) ?? {};
    const replicas = meta(deployment)['deletionTimestamp'] === undefined ? Number(spec['replicas'] ?? 1) : 0;
    const hash = createHash('sha256').update(JSON.stringify(template)).digest('hex').slice(0, 10);
    const current = owned.filter((podKey) => labelsOf(this.#objects.get(podKey) ?? {})['pod-template-hash'] === hash);
    const keep = new Set(current.slice(0, replicas));
    for (const podKey of owned) if (!keep.has(podKey)) this.#removePod(podKey);

    const namespace = String(meta(deployment)['namespace']);
    const podSpec = clone((template['spec'] as Json | undefined) ?? {});
    const containers = ((podSpec['containers'] as Json[] | undefined) ?? []).map((c) => ({
      name: String(c['name']),
      image: c['image'],
    }));
    for (let i = keep.size; i < replicas; i++) {
      const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
      const name = `${String(meta(deployment)['name'])}-${hash}-${randomUUID().slice(0, 5)}`;
      const podKey = key(podKind, namespace, name);
      this.#podOwners.set(podKey, deploymentKey);
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
            labels: { ...((meta(template)['labels'] as Json | undefined) ?? {}), 'pod-template-hash': hash },
            ownerReferences: [
              {
                apiVersion: 'apps/v1',
                kind: 'ReplicaSet',
                name: `${String(meta(deployment)['name'])}-${hash}`,
                uid: randomUUID(),
                controller: true,
              },
            ],
          },
          spec: podSpec,
          status: {
            phase: 'Running',
            podIP: '10.0.0.10',
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
          },
        },
        'ADDED',
      );
    }
  }

  #removePod(podKey: string): void {
    this.#podOwners.delete(podKey);
    const pod = this.#objects.get(podKey);
    if (pod) this.#remove(kindOf('pods'), podKey, clone(pod));
  }

  // ---- pods/exec ----

  #upgrade(req: IncomingMessage, socket: Socket, head: Buffer): void {
    const url = new URL(req.url ?? '/', 'http://x');
    this.requests.push({ method: req.method ?? 'GET', path: url.pathname, query: url.search, watch: false });
    const match = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)\/exec$/.exec(url.pathname);
    if (!match)
      return refuseUpgrade(socket, 404, 'NotFound', `the server could not find the requested resource (${url.pathname})`);
    const [, namespace = '', podName = ''] = match.map(decodeURIComponent);
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
    const wants = { stdout: url.searchParams.get('stdout') === 'true', stderr: url.searchParams.get('stderr') === 'true' };
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
    (object['metadata'] as Json)['resourceVersion'] = String(this.#rv);
    this.#objects.delete(k);
    this.#emit(kind, 'DELETED', object);
    // Garbage collection: a deleted Deployment's pods go with it.
    if (kind.plural === 'deployments') this.#simulatePods(k);
  }

  #emit(kind: Kind, type: StoredEvent['type'], object: Json): void {
    const event: StoredEvent = { rv: this.#rv, kind, type, object: clone(object) };
    this.#events.push(event);
    for (const w of this.#watchers) {
      if (w.kind === kind && this.#visible(w, object)) writeEvent(w.res, { type, object: event.object });
    }
  }
}

function deploymentStatusCurrent(object: Json): boolean {
  const status = object['status'] as Json | undefined;
  const replicas = Number((object['spec'] as Json | undefined)?.['replicas'] ?? 1);
  return status?.['observedGeneration'] === meta(object)['generation'] && status?.['readyReplicas'] === replicas;
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
  { group: 'networking.k8s.io', version: 'v1', plural: 'networkpolicies', kind: 'NetworkPolicy', namespaced: true },
  { group: 'monitoring.coreos.com', version: 'v1', plural: 'servicemonitors', kind: 'ServiceMonitor', namespaced: true },
  { group: 'monitoring.coreos.com', version: 'v1', plural: 'prometheusrules', kind: 'PrometheusRule', namespaced: true },
];

function discoveryDocument(path: string): Json | undefined {
  const all = [...FAKE_KINDS, ...DISCOVERY_ONLY];
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
): void {
  sendJson(res, code, {
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message,
    reason,
    code,
    ...(causes.length > 0
      ? { details: { causes: causes.map((c) => ({ field: c.field, message: c.message, reason: 'FieldValueInvalid' })) } }
      : {}),
  });
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
