import type { Writable } from 'node:stream';
import { lstat, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AppsV1Api, CoreV1Api, Exec, type KubeConfig, type V1Deployment, type V1ObjectMeta } from '@kubernetes/client-node';
import { CUSTOMER_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SPEC_HASH_LABEL } from '../../domain/naming.js';
import { isNotFound, MERGE_PATCH } from '../../kubernetes/client.js';
import type { Guard } from '../../resilience/guard.js';
import { MARKER_FILE } from '../../workspace/file-workspaces.js';
import { checkExtraLabels, HOST_PORT_LABEL } from '../../domain/labels.js';
import { ContainerNotRunningError, ExecTimeoutError } from '../exec-output.js';
import type { ContainerSpec, CustomerRuntime, ExecResult, ObservedContainer } from '../runtime.js';
import {
  ASSISTANT_CONTAINER,
  CONTENT_HASH_ANNOTATION,
  contentHash,
  deploymentManifest,
  pvcManifest,
  secretManifest,
  serviceManifest,
  type ManifestOptions,
  type RenderedFileData,
} from './manifests.js';
import { objectName, serviceDial } from './names.js';
import { observeDeployment, STARTED_AT_ANNOTATION } from './observe.js';
import type { WatchedKind } from './owned-objects-watch.js';
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
}

export class KubernetesRuntime implements CustomerRuntime {
  readonly #guard: Guard;
  readonly #apps: AppsV1Api;
  readonly #core: CoreV1Api;
  readonly #exec: Exec;
  readonly #extraLabels: Record<string, string>;
  readonly #manifest: ManifestOptions;

  constructor(guard: Guard, options: KubernetesRuntimeOptions) {
    this.#guard = guard;
    this.#apps = options.kubeConfig.makeApiClient(AppsV1Api);
    this.#core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.#exec = new Exec(options.kubeConfig);
    this.#extraLabels = checkExtraLabels(options.extraLabels ?? {});
    this.#manifest = {
      namespace: options.namespace,
      extraLabels: this.#extraLabels,
      storageSize: options.storageSize ?? '1Gi',
      storageClassName: options.storageClassName,
      imagePullPolicy: options.imagePullPolicy,
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
    const [deployments, secrets, services, claims] = await Promise.all([
      this.#guard('listDeployments', () => this.#apps.listNamespacedDeployment({ namespace, labelSelector })),
      this.#guard('listSecrets', () => this.#core.listNamespacedSecret({ namespace, labelSelector })),
      this.#guard('listServices', () => this.#core.listNamespacedService({ namespace, labelSelector })),
      this.#guard('listPersistentVolumeClaims', () =>
        this.#core.listNamespacedPersistentVolumeClaim({ namespace, labelSelector }),
      ),
    ]);
    const names = (items: Array<{ metadata?: V1ObjectMeta }>) => new Set(items.map((i) => i.metadata?.name ?? ''));
    const present = { secrets: names(secrets.items), services: names(services.items), claims: names(claims.items) };
    return deployments.items.map((deployment) => {
      const name = deployment.metadata?.name ?? '';
      const missing = [
        present.secrets.has(name) ? undefined : 'Secret',
        present.services.has(name) ? undefined : 'Service',
        present.claims.has(name) ? undefined : 'PersistentVolumeClaim',
      ].filter((k): k is string => k !== undefined);
      return observeDeployment(deployment, missing);
    });
  }

  async create(spec: ContainerSpec): Promise<string> {
    const files = await readRenderedFiles(spec);
    const namespace = this.#manifest.namespace;
    await this.writeFiles(spec.customer, files);
    const claim = pvcManifest(spec.customer, this.#manifest);
    // A PVC's spec is immutable once bound: created when missing, never updated.
    await this.#guard('createPersistentVolumeClaim', () =>
      this.#core.createNamespacedPersistentVolumeClaim({ namespace, body: claim }).catch(ignoreStatus(409)),
    );
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
    const deployment = deploymentManifest(spec, files, this.#manifest);
    await this.#upsert(
      'Deployment',
      deployment,
      (name) => this.#apps.readNamespacedDeployment({ name, namespace }),
      (body) => this.#apps.createNamespacedDeployment({ namespace, body }),
      (name, body) => this.#apps.replaceNamespacedDeployment({ name, namespace, body }),
      (existing, body) => {
        // The same spec hash is the same Deployment: keep it (and its replicas) as it is.
        if (existing.metadata?.labels?.[SPEC_HASH_LABEL] === spec.specHash && sameLabels(existing.metadata, body.metadata))
          return true;
        // Replaced in place, stopped like a newly created one; `start` scales it up.
        return false;
      },
    );
    return objectName(spec.customer);
  }

  /**
   * Writes the customer's rendered files into its Secret when their content changed. The
   * running pod sees them within the kubelet's sync period (its workspace links to them).
   */
  async writeFiles(customer: string, files: readonly RenderedFileData[]): Promise<void> {
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
    if (current(existing, body)) return;
    const next = { ...body, metadata: { ...body.metadata, resourceVersion: existing.metadata?.resourceVersion } } as T;
    await this.#guard(`replace${kind}`, () => replace(name, next), { retry: false });
  }

  async start(id: string): Promise<void> {
    await this.#scale(id, 1);
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

  async remove(id: string): Promise<void> {
    const namespace = this.#manifest.namespace;
    const gone = ignoreStatus(404);
    await this.#guard('deleteService', () =>
      this.#core.deleteNamespacedService({ name: id, namespace }).then(() => undefined, gone),
    );
    await this.#guard('deleteSecret', () =>
      this.#core.deleteNamespacedSecret({ name: id, namespace }).then(() => undefined, gone),
    );
    await this.#guard('deleteDeployment', () =>
      this.#apps.deleteNamespacedDeployment({ name: id, namespace, propagationPolicy: 'Background' }).then(() => undefined, gone),
    );
  }

  /** Deletes a customer's PVC and Secret: its workspace and memory (the purge after retention). */
  async removeWorkspace(customer: string): Promise<void> {
    const namespace = this.#manifest.namespace;
    const name = objectName(customer);
    const gone = ignoreStatus(404);
    await this.#guard('deleteSecret', () => this.#core.deleteNamespacedSecret({ name, namespace }).then(() => undefined, gone));
    await this.#guard('deletePersistentVolumeClaim', () =>
      this.#core.deleteNamespacedPersistentVolumeClaim({ name, namespace }).then(() => undefined, gone),
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
          plural: 'secrets',
          path: `/api/v1/namespaces/${ns}/secrets`,
          list: () => this.#guard('listSecrets', () => this.#core.listNamespacedSecret(query)),
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

function sameLabels(a: V1ObjectMeta | undefined, b: V1ObjectMeta | undefined): boolean {
  const sorted = (l: Record<string, string> | undefined) => JSON.stringify(Object.entries(l ?? {}).sort());
  return sorted(a?.labels) === sorted(b?.labels);
}

/**
 * The rendered files of the customer's workspace, read from the controller's own render (the
 * folder of the writable mount; its marker lists exactly the files rendered, nothing the
 * assistant wrote).
 */
export async function readRenderedFiles(spec: ContainerSpec): Promise<RenderedFileData[]> {
  const workspace = spec.mounts.find((m) => !m.readOnly);
  if (!workspace) throw new Error('the container spec has no writable workspace mount');
  let marker: { files?: unknown };
  try {
    marker = JSON.parse(await readFile(join(workspace.hostPath, MARKER_FILE), 'utf8')) as { files?: unknown };
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
