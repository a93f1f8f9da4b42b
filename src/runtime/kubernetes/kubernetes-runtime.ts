import type { Writable } from 'node:stream';
import { lstat, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  AppsV1Api,
  CoreV1Api,
  Exec,
  NetworkingV1Api,
  type KubeConfig,
  type V1Deployment,
  type V1ObjectMeta,
} from '@kubernetes/client-node';
import { canonicalJson } from '../../domain/canonical-json.js';
import { CUSTOMER_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SPEC_HASH_LABEL } from '../../domain/naming.js';
import { isNotFound, MERGE_PATCH } from '../../kube-api/client.js';
import type { Guard } from '../../resilience/guard.js';
import { renderMarkerPath } from '../../workspace/file-workspaces.js';
import { OPENCLAW_CONFIG_FILE } from '../../workspace/render.js';
import { checkExtraLabels, HOST_PORT_LABEL } from '../../domain/labels.js';
import { ContainerNotRunningError, ExecTimeoutError } from '../exec-output.js';
import type { ContainerSpec, CustomerRuntime, ExecResult, ObservedContainer } from '../runtime.js';
import {
  ASSISTANT_CONTAINER,
  CONTENT_HASH_ANNOTATION,
  contentHash,
  deploymentManifest,
  networkPolicyManifest,
  OWNED_CONFIG_ANNOTATION,
  ownedConfigHash,
  pvcManifest,
  secretManifest,
  serviceManifest,
  type CustomerNetwork,
  type ManifestOptions,
  type RenderedFileData,
} from './manifests.js';
import { objectName, serviceDial } from '../../kube-api/customer-object-meta.js';
import { observeDeployment, RESTARTED_AT_ANNOTATION, STARTED_AT_ANNOTATION } from './observe.js';
import type { WatchedKind } from '../../kube-api/owned-objects-watch.js';
import { EXEC_CONNECT_TIMEOUT_MS, pickExecPod, runPodExec } from './pod-exec.js';

/**
 * CustomerRuntime on Kubernetes (BLYTZ_RUNTIME=kubernetes). Per customer, in one namespace:
 * Secret (rendered files), PVC (workspace and memory), Deployment (one replica when started)
 * and Service, all named by `objectName` and labelled with the contract's marks.
 *
 * Mapping of the runtime's verbs: a "container" is the Deployment (its id is the Deployment's
 * name); create = apply the four objects with the Deployment at 0 replicas; start/stop = scale to
 * 1/0; remove = delete Service, Secret and Deployment (Deployment last, so a Deployment that is
 * still listed means there may be more to delete). The PVC is the customer's workspace, like the
 * folder on a Docker host: it outlives containers and goes with the workspace purge
 * (`removeWorkspace`, wired through KubernetesWorkspaces). `exec` runs in the assistant
 * container of one of the Deployment's running pods, through the pods/exec subresource.
 *
 * Every API call goes through the `kubernetes` Guard.
 */

export interface KubernetesRuntimeOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  /** Stamped on everything created and required when listing (like the Docker runtime's). */
  extraLabels?: Record<string, string>;
  /** PVC size (default 1Gi) and class (default: the cluster's default class). */
  storageSize?: string;
  storageClassName?: string;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never';
  /** Each customer's NetworkPolicy (default: in from the kit's Caddy pods, no model gateway). */
  network?: CustomerNetwork;
}

export class KubernetesRuntime implements CustomerRuntime {
  readonly #guard: Guard;
  readonly #apps: AppsV1Api;
  readonly #core: CoreV1Api;
  readonly #networking: NetworkingV1Api;
  readonly #exec: Exec;
  readonly #extraLabels: Record<string, string>;
  readonly #manifest: ManifestOptions;

  constructor(guard: Guard, options: KubernetesRuntimeOptions) {
    this.#guard = guard;
    this.#apps = options.kubeConfig.makeApiClient(AppsV1Api);
    this.#core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.#networking = options.kubeConfig.makeApiClient(NetworkingV1Api);
    this.#exec = new Exec(options.kubeConfig);
    this.#extraLabels = checkExtraLabels(options.extraLabels ?? {});
    this.#manifest = {
      namespace: options.namespace,
      extraLabels: this.#extraLabels,
      storageSize: options.storageSize ?? '1Gi',
      storageClassName: options.storageClassName,
      imagePullPolicy: options.imagePullPolicy,
      network: options.network,
    };
  }

  get namespace(): string {
    return this.#manifest.namespace;
  }

  #selector(more: Record<string, string> = {}): string {
    return Object.entries({ [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, ...this.#extraLabels, ...more })
      .map(([k, v]) => `${k}=${v}`)
      .join(',');
  }

  list(): Promise<ObservedContainer[]> {
    return this.#list({});
  }

  listFor(customer: string): Promise<ObservedContainer[]> {
    return this.#list({ [CUSTOMER_LABEL]: customer });
  }

  /** One list per kind. A Deployment whose Secret, Service or PVC is missing counts as dead, so it is recreated. */
  async #list(more: Record<string, string>): Promise<ObservedContainer[]> {
    const labelSelector = this.#selector(more);
    const namespace = this.#manifest.namespace;
    // No Secrets: the controller may not list them (a list is every Secret's content, and RBAC
    // cannot narrow it to our labels). A customer's Secret is its rendered files, looked at by
    // name when its workspace is observed (`hasFiles`).
    const [deployments, services, claims, pods, policies] = await Promise.all([
      this.#guard('listDeployments', () => this.#apps.listNamespacedDeployment({ namespace, labelSelector })),
      this.#guard('listServices', () => this.#core.listNamespacedService({ namespace, labelSelector })),
      this.#guard('listPersistentVolumeClaims', () =>
        this.#core.listNamespacedPersistentVolumeClaim({ namespace, labelSelector }),
      ),
      // The kubelet's view: a pod crash-looping after its first success leaves the Deployment's
      // conditions as they were (Progressing stays true), only its pods tell.
      this.#guard('listPods', () => this.#core.listNamespacedPod({ namespace, labelSelector })),
      this.#guard('listNetworkPolicies', () => this.#networking.listNamespacedNetworkPolicy({ namespace, labelSelector })),
    ]);
    const names = (items: Array<{ metadata?: V1ObjectMeta }>) => new Set(items.map((i) => i.metadata?.name ?? ''));
    const present = {
      services: names(services.items),
      claims: names(claims.items),
      policies: names(policies.items),
    };
    const podsOf = (customer: string | undefined) => pods.items.filter((p) => p.metadata?.labels?.[CUSTOMER_LABEL] === customer);
    const containers = deployments.items.map((deployment) => {
      const name = deployment.metadata?.name ?? '';
      const missing = [
        present.services.has(name) ? undefined : 'Service',
        present.claims.has(name) ? undefined : 'PersistentVolumeClaim',
        // An unisolated pod can reach every other customer: as broken as a missing part.
        present.policies.has(name) ? undefined : 'NetworkPolicy',
      ].filter((k): k is string => k !== undefined);
      return observeDeployment(deployment, missing, Date.now(), podsOf(deployment.metadata?.labels?.[CUSTOMER_LABEL]));
    });
    return [...containers, ...leftovers(deployments.items, { Service: services.items, NetworkPolicy: policies.items }, podsOf)];
  }

  async create(spec: ContainerSpec): Promise<string> {
    const files = await readRenderedFiles(spec);
    const namespace = this.#manifest.namespace;
    // The Secret only: the Deployment written below carries the files' owned-config hash itself.
    await this.#writeSecret(spec.customer, files);
    const claim = pvcManifest(spec.customer, this.#manifest);
    // A PVC's spec is immutable once bound: created when missing, never updated (but never
    // taken over either: one of that name that is not ours stops the create).
    const created = await this.#guard('createPersistentVolumeClaim', () =>
      this.#core.createNamespacedPersistentVolumeClaim({ namespace, body: claim }).catch(ignoreStatus(409)),
    );
    if (!created) {
      const existing = await this.#guard('readPersistentVolumeClaim', () =>
        this.#core.readNamespacedPersistentVolumeClaim({ name: claim.metadata?.name ?? '', namespace }),
      );
      refuseForeign('PersistentVolumeClaim', existing, spec.customer);
    }
    await this.#upsert(
      'Service',
      serviceManifest(spec, this.#manifest),
      (name) => this.#core.readNamespacedService({ name, namespace }),
      (body) => this.#core.createNamespacedService({ namespace, body }),
      (name, body) => this.#core.replaceNamespacedService({ name, namespace, body }),
      (existing, body) => {
        // clusterIP is assigned by the server and immutable: carry it over.
        if (existing.spec?.clusterIP && body.spec) body.spec.clusterIP = existing.spec.clusterIP;
        // Only the fields we set: the API server fills in defaults of its own.
        const ports = (svc: typeof body) =>
          JSON.stringify((svc.spec?.ports ?? []).map((p) => [p.name, p.port, String(p.targetPort), p.protocol ?? 'TCP']));
        const selector = (svc: typeof body) => JSON.stringify(Object.entries(svc.spec?.selector ?? {}).sort());
        return (
          sameLabels(existing.metadata, body.metadata) && ports(existing) === ports(body) && selector(existing) === selector(body)
        );
      },
    );
    // Before the Deployment: its pods never run without isolation.
    await this.#upsert(
      'NetworkPolicy',
      networkPolicyManifest(spec, this.#manifest),
      (name) => this.#networking.readNamespacedNetworkPolicy({ name, namespace }),
      (body) => this.#networking.createNamespacedNetworkPolicy({ namespace, body }),
      (name, body) => this.#networking.replaceNamespacedNetworkPolicy({ name, namespace, body }),
      (existing, body) =>
        sameLabels(existing.metadata, body.metadata) && canonicalJson(existing.spec) === canonicalJson(body.spec),
    );
    const deployment = deploymentManifest(spec, files, this.#manifest);
    await this.#upsert(
      'Deployment',
      deployment,
      (name) => this.#apps.readNamespacedDeployment({ name, namespace }),
      (body) => this.#apps.createNamespacedDeployment({ namespace, body }),
      (name, body) => this.#apps.replaceNamespacedDeployment({ name, namespace, body }),
      (existing, body) => {
        // The same spec hash (and owned config) is the same Deployment: keep it (and its replicas) as it is.
        const ownedConfig = (d: V1Deployment) => d.spec?.template.metadata?.annotations?.[OWNED_CONFIG_ANNOTATION];
        if (
          existing.metadata?.labels?.[SPEC_HASH_LABEL] === spec.specHash &&
          ownedConfig(existing) === ownedConfig(body) &&
          sameLabels(existing.metadata, body.metadata)
        )
          return true;
        // Updated in place, at the replicas it has: its own strategy (Recreate for OpenClaw)
        // replaces the pod, the Service keeps its address, the volume stays with the new pod.
        if (body.spec) body.spec.replicas = existing.spec?.replicas ?? 0;
        return false;
      },
    );
    return objectName(spec.customer);
  }

  /**
   * Writes the customer's rendered files into its Secret when their content changed. The
   * running pod sees them within the kubelet's sync period (its workspace links to them), except
   * openclaw.json, which the seed merges when a pod starts: a change of the controller's fields
   * there is written into the pod template (OWNED_CONFIG_ANNOTATION), so the Deployment replaces
   * the pod by its strategy and the gateway starts on the new fields.
   */
  async writeFiles(customer: string, files: readonly RenderedFileData[]): Promise<void> {
    await this.#writeSecret(customer, files);
    const config = files.find((f) => f.path === OPENCLAW_CONFIG_FILE);
    if (!config) return;
    const hash = ownedConfigHash(config.content);
    const namespace = this.#manifest.namespace;
    const name = objectName(customer);
    const deployment = await this.#guard('readDeployment', () =>
      this.#apps.readNamespacedDeployment({ name, namespace }).catch(ignoreStatus(404)),
    );
    if (!deployment || !isOurs(deployment.metadata, customer) || deployment.metadata?.deletionTimestamp) return;
    if (deployment.spec?.template.metadata?.annotations?.[OWNED_CONFIG_ANNOTATION] === hash) return;
    await this.#guard('restartDeployment', () =>
      this.#apps.patchNamespacedDeployment(
        {
          name,
          namespace,
          body: {
            metadata: { resourceVersion: deployment.metadata?.resourceVersion },
            spec: { template: { metadata: { annotations: { [OWNED_CONFIG_ANNOTATION]: hash } } } },
          },
        },
        MERGE_PATCH,
      ),
    );
  }

  async #writeSecret(customer: string, files: readonly RenderedFileData[]): Promise<void> {
    const namespace = this.#manifest.namespace;
    const secret = secretManifest(customer, files, this.#manifest);
    const hash = contentHash(files);
    await this.#upsert(
      'Secret',
      secret,
      (name) => this.#core.readNamespacedSecret({ name, namespace }),
      (body) => this.#core.createNamespacedSecret({ namespace, body }),
      (name, body) => this.#core.replaceNamespacedSecret({ name, namespace, body }),
      (existing) =>
        existing.metadata?.annotations?.[CONTENT_HASH_ANNOTATION] === hash && sameLabels(existing.metadata, secret.metadata),
    );
  }

  /**
   * Whether the customer's Secret (its rendered files) is there and ours. Read by name: the
   * controller may not list Secrets. A missing one makes the workspace stale, so the next render
   * writes it again.
   */
  async hasFiles(customer: string): Promise<boolean> {
    const namespace = this.#manifest.namespace;
    const secret = await this.#guard('readSecret', () =>
      this.#core.readNamespacedSecret({ name: objectName(customer), namespace }).catch(ignoreStatus(404)),
    );
    return secret !== undefined && isOurs(secret.metadata, customer) && !secret.metadata?.deletionTimestamp;
  }

  /**
   * Create when missing; when present and not `current`, replace at the read resourceVersion.
   * A conflict (someone else wrote meanwhile) surfaces as an error: the next reconcile retries.
   */
  async #upsert<T extends { metadata?: V1ObjectMeta }>(
    kind: string,
    body: T,
    read: (name: string) => Promise<T>,
    create: (body: T) => Promise<T>,
    replace: (name: string, body: T) => Promise<T>,
    current: (existing: T, body: T) => boolean,
  ): Promise<void> {
    const name = body.metadata?.name ?? '';
    const existing = await this.#guard(`read${kind}`, () =>
      read(name).catch((error: unknown) => (isNotFound(error) ? undefined : Promise.reject(error))),
    );
    if (!existing) {
      await this.#guard(`create${kind}`, () => create(body), { retry: false });
      return;
    }
    refuseForeign(kind, existing, body.metadata?.labels?.[CUSTOMER_LABEL]);
    if (current(existing, body)) return;
    const next = { ...body, metadata: { ...body.metadata, resourceVersion: existing.metadata?.resourceVersion } } as T;
    await this.#guard(`replace${kind}`, () => replace(name, next), { retry: false });
  }

  /** The planner updates by `create` here (see CustomerRuntime.updatesInPlace). */
  readonly updatesInPlace = true;

  /** The Deployment goes in the foreground, once its pods have stopped (see `remove`). */
  readonly removesInBackground = true;

  async start(id: string): Promise<void> {
    await this.#scale(id, 1);
  }

  /**
   * A new pod from the same spec, as `kubectl rollout restart` does: an annotation on the pod
   * template makes it a new template, which the Deployment controller rolls out by the
   * Deployment's strategy. (Scaling to 0 and back to 1 is no restart: the controller may see
   * both writes in one sync and do nothing.)
   */
  async restart(id: string): Promise<void> {
    const now = new Date().toISOString();
    await this.#guard('restartDeployment', () =>
      this.#apps.patchNamespacedDeployment(
        {
          name: id,
          namespace: this.#manifest.namespace,
          body: {
            metadata: { annotations: { [STARTED_AT_ANNOTATION]: now } },
            spec: { replicas: 1, template: { metadata: { annotations: { [RESTARTED_AT_ANNOTATION]: now } } } },
          },
        },
        MERGE_PATCH,
      ),
    );
  }

  async stop(id: string): Promise<void> {
    await this.#scale(id, 0);
  }

  async #scale(name: string, replicas: number): Promise<void> {
    await this.#guard(replicas > 0 ? 'startDeployment' : 'stopDeployment', async () => {
      try {
        await this.#apps.patchNamespacedDeployment(
          {
            name,
            namespace: this.#manifest.namespace,
            // When it was started: a failure right after is not yet a reason to restart (observe.ts).
            body:
              replicas > 0
                ? { metadata: { annotations: { [STARTED_AT_ANNOTATION]: new Date().toISOString() } }, spec: { replicas } }
                : { spec: { replicas } },
          },
          MERGE_PATCH,
        );
      } catch (error) {
        if (replicas === 0 && isNotFound(error)) return; // stopping what is gone: the goal holds
        throw error;
      }
    });
  }

  /**
   * Removes the customer's Service, Secret and Deployment, and its NetworkPolicy once its pods are
   * gone. The Deployment is deleted in the foreground: it stays (state `removing`) until the
   * garbage collector has deleted its ReplicaSets and their pods have stopped, which takes their
   * grace period. Their NetworkPolicy must outlive them (a Terminating pod still runs, hostile
   * code included), so it is deleted only when no Deployment and no pod of the customer is left:
   * a later call does it (the planner calls again while the Deployment is `removing`, and then for
   * what is left without it, see `#list`).
   */
  async remove(id: string): Promise<void> {
    const namespace = this.#manifest.namespace;
    await this.#deleteOurs(
      'Service',
      id,
      (name) => this.#core.readNamespacedService({ name, namespace }),
      (name, uid) => this.#core.deleteNamespacedService({ name, namespace, body: { preconditions: { uid } } }),
    );
    await this.#deleteOurs(
      'Secret',
      id,
      (name) => this.#core.readNamespacedSecret({ name, namespace }),
      (name, uid) => this.#core.deleteNamespacedSecret({ name, namespace, body: { preconditions: { uid } } }),
    );
    const deployment = await this.#deleteOurs(
      'Deployment',
      id,
      (name) => this.#apps.readNamespacedDeployment({ name, namespace }),
      (name, uid) =>
        this.#apps.deleteNamespacedDeployment({
          name,
          namespace,
          propagationPolicy: 'Foreground',
          body: { preconditions: { uid } },
        }),
    );
    if (deployment) return; // it goes once its pods are gone; the policy after it
    await this.#deleteOurs(
      'NetworkPolicy',
      id,
      (name) => this.#networking.readNamespacedNetworkPolicy({ name, namespace }),
      (name, uid) => this.#networking.deleteNamespacedNetworkPolicy({ name, namespace, body: { preconditions: { uid } } }),
      async (policy) => !(await this.#hasPods(policy.metadata?.labels?.[CUSTOMER_LABEL] ?? '')),
    );
  }

  /** Whether any pod of the customer (Terminating ones included) is still there. */
  async #hasPods(customer: string): Promise<boolean> {
    const pods = await this.#guard('listPods', () =>
      this.#core.listNamespacedPod({
        namespace: this.#manifest.namespace,
        labelSelector: this.#selector({ [CUSTOMER_LABEL]: customer }),
      }),
    );
    return pods.items.length > 0;
  }

  /**
   * Deletes `kind` `name` when it carries our marks (its uid as precondition) and `when` agrees;
   * returns what it deleted. Gone or not ours: nothing.
   */
  async #deleteOurs<T extends { metadata?: V1ObjectMeta }>(
    kind: string,
    name: string,
    read: (name: string) => Promise<T>,
    remove: (name: string, uid: string) => Promise<unknown>,
    when: (existing: T) => Promise<boolean> = () => Promise.resolve(true),
  ): Promise<T | undefined> {
    const existing = await this.#guard(`read${kind}`, () => read(name).catch(ignoreStatus(404)));
    if (!existing || !isOurs(existing.metadata) || !(await when(existing))) return undefined;
    const uid = existing.metadata?.uid ?? '';
    await this.#guard(`delete${kind}`, () => remove(name, uid).then(() => undefined, ignoreStatus(404)));
    return existing;
  }

  /** Deletes a customer's PVC and Secret: its workspace and memory (the purge after retention). */
  async removeWorkspace(customer: string): Promise<void> {
    const namespace = this.#manifest.namespace;
    const name = objectName(customer);
    await this.#deleteOurs(
      'Secret',
      name,
      (secret) => this.#core.readNamespacedSecret({ name: secret, namespace }),
      (secret, uid) => this.#core.deleteNamespacedSecret({ name: secret, namespace, body: { preconditions: { uid } } }),
    );
    await this.#deleteOurs(
      'PersistentVolumeClaim',
      name,
      (claim) => this.#core.readNamespacedPersistentVolumeClaim({ name: claim, namespace }),
      (claim, uid) =>
        this.#core.deleteNamespacedPersistentVolumeClaim({ name: claim, namespace, body: { preconditions: { uid } } }),
    );
  }

  /** Customers that have a workspace volume (for purge and orphan checks). */
  async listVolumes(): Promise<string[]> {
    const claims = await this.#guard('listPersistentVolumeClaims', () =>
      this.#core.listNamespacedPersistentVolumeClaim({ namespace: this.#manifest.namespace, labelSelector: this.#selector() }),
    );
    return claims.items
      .map((c) => c.metadata?.labels?.[CUSTOMER_LABEL] ?? '')
      .filter(Boolean)
      .sort();
  }

  /**
   * Runs a command in the assistant container of the Deployment's pod (pairing approval), through
   * the pods/exec subresource. No running pod (scaled to 0, still starting, gone) is
   * ContainerNotRunningError, like a stopped container on Docker.
   */
  async exec(id: string, command: string[], timeoutMs = 30_000): Promise<ExecResult> {
    const pod = await this.#execPod(id);
    const target = { namespace: this.#manifest.namespace, pod, container: ASSISTANT_CONTAINER };
    try {
      // Not retried: the command may have had its effect before a failure (see the Docker runtime).
      return await this.#guard('exec', (signal) => runPodExec(this.#exec, target, command, timeoutMs, signal), {
        retry: false,
        timeoutMs: timeoutMs + EXEC_CONNECT_TIMEOUT_MS + 10_000,
      });
    } catch (error) {
      if (error instanceof ExecTimeoutError || error instanceof ContainerNotRunningError) throw error;
      // A container that stopped (or a pod that went) between the listing and the exec comes
      // back as a generic failure ("container not found"); look again to tell it apart.
      const now = await this.#execPod(id).then(
        () => undefined,
        (recheck: unknown) => recheck,
      );
      if (now instanceof ContainerNotRunningError) throw now;
      throw error;
    }
  }

  /** `exec` with stdout streamed (a backup of the state on the customer's claim). */
  async execStream(id: string, command: string[], stdout: Writable, timeoutMs = 30 * 60_000): Promise<ExecResult> {
    const pod = await this.#execPod(id);
    const target = { namespace: this.#manifest.namespace, pod, container: ASSISTANT_CONTAINER };
    return this.#guard(
      'exec',
      (signal) => runPodExec(this.#exec, target, command, timeoutMs, signal, EXEC_CONNECT_TIMEOUT_MS, stdout),
      { retry: false, timeoutMs: timeoutMs + EXEC_CONNECT_TIMEOUT_MS + 10_000 },
    );
  }

  /** The name of the pod to exec in: one of the Deployment's own pods (by its selector). */
  async #execPod(id: string): Promise<string> {
    const namespace = this.#manifest.namespace;
    const deployment = await this.#guard('readDeployment', () =>
      this.#apps.readNamespacedDeployment({ name: id, namespace }).catch(ignoreStatus(404)),
    );
    if (!deployment || deployment.metadata?.deletionTimestamp) throw new ContainerNotRunningError(id, 'no such Deployment');
    const matchLabels = deployment.spec?.selector?.matchLabels ?? {};
    if (Object.keys(matchLabels).length === 0) throw new ContainerNotRunningError(id, 'the Deployment selects no pods by label');
    const pods = await this.#guard('listPods', () =>
      this.#core.listNamespacedPod({
        namespace,
        labelSelector: Object.entries(matchLabels)
          .map(([k, v]) => `${k}=${v}`)
          .join(','),
      }),
    );
    const pod = pickExecPod(pods.items, ASSISTANT_CONTAINER)?.metadata?.name;
    if (!pod)
      throw new ContainerNotRunningError(
        id,
        `none of its ${pods.items.length} pod(s) has a running ${ASSISTANT_CONTAINER} container`,
      );
    return pod;
  }

  /**
   * What OwnedObjectsWatch watches: every kind this runtime writes, in its namespace, with our
   * labels; each listed (one item, through the guard) only for the collection's resourceVersion.
   */
  ownedKinds(): { labelSelector: string; kinds: WatchedKind[] } {
    const namespace = this.#manifest.namespace;
    const ns = encodeURIComponent(namespace);
    const labelSelector = this.#selector();
    const query = { namespace, labelSelector, limit: 1 };
    return {
      labelSelector,
      kinds: [
        {
          plural: 'deployments',
          path: `/apis/apps/v1/namespaces/${ns}/deployments`,
          list: () => this.#guard('listDeployments', () => this.#apps.listNamespacedDeployment(query)),
        },
        {
          plural: 'services',
          path: `/api/v1/namespaces/${ns}/services`,
          list: () => this.#guard('listServices', () => this.#core.listNamespacedService(query)),
        },
        {
          plural: 'networkpolicies',
          path: `/apis/networking.k8s.io/v1/namespaces/${ns}/networkpolicies`,
          list: () => this.#guard('listNetworkPolicies', () => this.#networking.listNamespacedNetworkPolicy(query)),
        },
        {
          plural: 'persistentvolumeclaims',
          path: `/api/v1/namespaces/${ns}/persistentvolumeclaims`,
          list: () => this.#guard('listPersistentVolumeClaims', () => this.#core.listNamespacedPersistentVolumeClaim(query)),
        },
      ],
    };
  }

  /** The customer's Service in its namespace: its port is the reserved one (see serviceManifest). */
  upstream(customer: string, port: number): string {
    return serviceDial(customer, this.#manifest.namespace, port);
  }

  async ping(): Promise<void> {
    await this.#guard('ping', () =>
      this.#apps.listNamespacedDeployment({ namespace: this.#manifest.namespace, labelSelector: this.#selector(), limit: 1 }),
    );
  }
}

function ignoreStatus(status: number): (error: unknown) => undefined {
  return (error) => {
    if ((error as { code?: unknown }).code === status) return undefined;
    throw error;
  };
}

/**
 * A customer's parts that outlived its Deployment (its NetworkPolicy waits for the last pod;
 * a crash or a hand delete can leave a Service), seen as its container in state `dead` (or
 * `removing` while pods are still there), so the planner removes them: nothing with our marks is
 * left behind, and a desired customer is simply created again. The PVC and Secret are its
 * workspace and are left to the workspace's purge.
 */
function leftovers(
  deployments: ReadonlyArray<{ metadata?: V1ObjectMeta }>,
  parts: Record<string, ReadonlyArray<{ metadata?: V1ObjectMeta }>>,
  podsOf: (customer: string) => readonly unknown[],
): ObservedContainer[] {
  const withDeployment = new Set(deployments.map((d) => d.metadata?.labels?.[CUSTOMER_LABEL]));
  const left = new Map<string, string[]>();
  for (const [kind, items] of Object.entries(parts)) {
    for (const item of items) {
      const customer = item.metadata?.labels?.[CUSTOMER_LABEL];
      if (!customer || withDeployment.has(customer) || item.metadata?.name !== objectNameOrUndefined(customer)) continue;
      left.set(customer, [...(left.get(customer) ?? []), kind]);
    }
  }
  return [...left].map(([customer, kinds]) => {
    const name = objectName(customer);
    const running = podsOf(customer).length > 0;
    return {
      id: name,
      customer,
      name,
      specHash: undefined,
      state: running ? 'removing' : 'dead',
      health: 'unknown',
      healthMessage: `no Deployment; left: ${kinds.join(', ')}${running ? `, ${podsOf(customer).length} pod(s)` : ''}`,
    };
  });
}

function objectNameOrUndefined(customer: string): string | undefined {
  try {
    return objectName(customer);
  } catch {
    return undefined; // a label no customer name could have: not ours to remove by name
  }
}

/** Carries the contract's managed-by mark (and, when given, belongs to `customer`). */
function isOurs(meta: V1ObjectMeta | undefined, customer?: string): boolean {
  const labels = meta?.labels ?? {};
  return labels[MANAGED_BY_LABEL] === MANAGED_BY_VALUE && (customer === undefined || labels[CUSTOMER_LABEL] === customer);
}

/**
 * An object named like a customer's that Blytz did not make (a user's Service `blytz-x`, say)
 * is never overwritten or adopted: the reconcile fails with this until it is renamed or deleted.
 */
function refuseForeign(kind: string, existing: { metadata?: V1ObjectMeta }, customer: string | undefined): void {
  if (isOurs(existing.metadata, customer)) return;
  const name = existing.metadata?.name ?? '';
  throw new Error(
    `${kind} ${name} exists but was not made by Blytz for customer ${customer ?? '?'} (no ${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE} and ${CUSTOMER_LABEL}=${customer ?? '?'} labels): rename or delete it`,
  );
}

function sameLabels(a: V1ObjectMeta | undefined, b: V1ObjectMeta | undefined): boolean {
  const sorted = (l: Record<string, string> | undefined) => JSON.stringify(Object.entries(l ?? {}).sort());
  return sorted(a?.labels) === sorted(b?.labels);
}

/**
 * The rendered files of the customer's workspace, read from the controller's own render (the
 * folder of the writable mount; its marker, kept beside the customer folders, lists exactly the
 * files rendered, nothing the assistant wrote).
 */
export async function readRenderedFiles(spec: ContainerSpec): Promise<RenderedFileData[]> {
  const workspace = spec.mounts.find((m) => !m.readOnly);
  if (!workspace) throw new Error('the container spec has no writable workspace mount');
  let marker: { files?: unknown };
  try {
    marker = JSON.parse(await readFile(renderMarkerPath(workspace.hostPath), 'utf8')) as { files?: unknown };
  } catch (error) {
    throw new Error(`the workspace of ${spec.customer} is not rendered yet (${(error as Error).message})`, { cause: error });
  }
  const paths = Array.isArray(marker.files) ? marker.files.filter((p): p is string => typeof p === 'string') : [];
  const files: RenderedFileData[] = [];
  for (const path of paths) {
    if (path.startsWith('/') || path.split('/').includes('..'))
      throw new Error(`rendered path ${JSON.stringify(path)} is not relative`);
    const full = join(workspace.hostPath, ...path.split('/'));
    const stat = await lstat(full);
    if (!stat.isFile()) throw new Error(`rendered file ${path} is not a regular file`);
    files.push({ path, content: await readFile(full) });
  }
  return files;
}

export type { V1Deployment };
export { HOST_PORT_LABEL };
