import type { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AppsV1Api,
  CoreV1Api,
  Exec,
  type KubeConfig,
  type V1Deployment,
  type V1ObjectMeta,
  type V1Pod,
} from '@kubernetes/client-node';
import { CUSTOMER_LABEL, isDns1123Label, MANAGED_BY_LABEL, MANAGED_BY_VALUE } from '../../domain/naming.js';
import { checkExtraLabels } from '../../domain/labels.js';
import { isNotFound } from '../../kube-api/client.js';
import type { Guard } from '../../resilience/guard.js';
import type { ExecResult } from '../runtime.js';
import { ASSISTANT_CONTAINER } from './manifests.js';
import { objectName } from '../../kube-api/customer-object-meta.js';
import { EXEC_CONNECT_TIMEOUT_MS, runPodExec } from './pod-exec.js';

/**
 * A short-lived pod that mounts a stopped customer's claim, so a restore can write its state
 * (src/backup/pod-state.ts): nothing else may have the claim meanwhile (it is ReadWriteOnce, and
 * a Terminating assistant pod still writes to it), so it is created only while the customer's
 * Deployment is at 0 replicas and none of its pods is left, and checked again before each use.
 *
 * It is the assistant's image under the assistant's own user and security context (the files it
 * writes are the assistant's), runs `sleep` until the restore execs `tar` and `mv` in it, has no
 * service account token, and ends on its own after a deadline should the controller never come
 * back for it. It carries the managed-by mark and `cloud.blytz.restore-of=<customer>`, not the
 * customer label: the customer's Service does not send it traffic and the runtime does not take
 * it for the assistant.
 */

export const RESTORE_OF_LABEL = 'cloud.blytz.restore-of';
export const RESTORE_CONTAINER = 'restore';
/** The pod ends by itself after this (a controller that never came back for it). */
const DEADLINE_SECONDS = 6 * 3600;

export function restorePodName(customer: string): string {
  if (!isDns1123Label(customer)) throw new Error(`customer name ${JSON.stringify(customer)} is not a DNS-1123 label`);
  return `blytz-restore-${customer}`;
}

/** The restore pod from the customer's Deployment: its image, user and security context, its claim at `mountPath`. */
export function restorePodManifest(
  customer: string,
  deployment: V1Deployment,
  mountPath: string,
  options: { namespace: string; extraLabels: Record<string, string> },
): V1Pod {
  const template = deployment.spec?.template.spec;
  const assistant = template?.containers.find((c) => c.name === ASSISTANT_CONTAINER);
  if (!template || !assistant?.image) throw new Error(`the Deployment of ${customer} has no ${ASSISTANT_CONTAINER} container`);
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: restorePodName(customer),
      namespace: options.namespace,
      labels: { ...options.extraLabels, [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, [RESTORE_OF_LABEL]: customer },
    },
    spec: {
      restartPolicy: 'Never',
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      activeDeadlineSeconds: DEADLINE_SECONDS,
      // `sleep` ignores SIGTERM: a short grace, and the restore waits until the pod is gone.
      terminationGracePeriodSeconds: 2,
      ...(template.securityContext ? { securityContext: template.securityContext } : {}),
      containers: [
        {
          name: RESTORE_CONTAINER,
          image: assistant.image,
          ...(assistant.imagePullPolicy ? { imagePullPolicy: assistant.imagePullPolicy } : {}),
          command: ['sleep', String(DEADLINE_SECONDS)],
          securityContext: { ...assistant.securityContext, readOnlyRootFilesystem: true },
          resources: { limits: { cpu: '500m', memory: '256Mi' }, requests: { cpu: '10m', memory: '32Mi' } },
          volumeMounts: [{ name: 'workspace', mountPath }],
        },
      ],
      volumes: [{ name: 'workspace', persistentVolumeClaim: { claimName: objectName(customer) } }],
    },
  };
}

export interface RestorePodOptions {
  kubeConfig: KubeConfig;
  namespace: string;
  extraLabels?: Record<string, string>;
  /** How long `open` and `close` wait for pods to come and go (default 5 minutes). */
  waitMs?: number;
  /** How often they look meanwhile (default 500 ms). */
  lookMs?: number;
}

export class KubernetesRestorePods {
  readonly #guard: Guard;
  readonly #core: CoreV1Api;
  readonly #apps: AppsV1Api;
  readonly #exec: Exec;
  readonly #namespace: string;
  readonly #extraLabels: Record<string, string>;
  readonly #waitMs: number;
  readonly #lookMs: number;

  constructor(guard: Guard, options: RestorePodOptions) {
    this.#guard = guard;
    this.#core = options.kubeConfig.makeApiClient(CoreV1Api);
    this.#apps = options.kubeConfig.makeApiClient(AppsV1Api);
    this.#exec = new Exec(options.kubeConfig);
    this.#namespace = options.namespace;
    this.#extraLabels = checkExtraLabels(options.extraLabels ?? {});
    this.#waitMs = options.waitMs ?? 5 * 60_000;
    this.#lookMs = options.lookMs ?? 500;
  }

  /** Makes sure the customer's restore pod runs, its claim at `mountPath`, and that nothing else has the claim. */
  async open(customer: string, mountPath: string): Promise<void> {
    const deadline = Date.now() + this.#waitMs;
    for (;;) {
      const waiting = await this.#step(customer, mountPath);
      if (waiting === undefined) return;
      if (Date.now() >= deadline)
        throw new Error(`restore pod of ${customer} not running after ${Math.round(this.#waitMs / 1000)} s: ${waiting}`);
      await sleep(this.#lookMs);
    }
  }

  /** One look: undefined once the restore pod runs alone on the claim, else what it waits for. */
  async #step(customer: string, mountPath: string): Promise<string | undefined> {
    const namespace = this.#namespace;
    const deployment = await this.#guard('readDeployment', () =>
      this.#apps.readNamespacedDeployment({ name: objectName(customer), namespace }).catch(notFoundAsUndefined),
    );
    if (!deployment || !isOurs(deployment.metadata, CUSTOMER_LABEL, customer))
      throw new Error(
        `customer ${customer} has no Deployment yet (its image and user are the restore's): restore once it has one`,
      );
    if ((deployment.spec?.replicas ?? 1) !== 0) return 'the assistant is not scaled to 0 replicas';
    const selector = { ...this.#extraLabels, [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, [CUSTOMER_LABEL]: customer };
    const pods = await this.#guard('listPods', () =>
      this.#core.listNamespacedPod({
        namespace,
        labelSelector: Object.entries(selector)
          .map(([k, v]) => `${k}=${v}`)
          .join(','),
      }),
    );
    if (pods.items.length > 0) return `${pods.items.length} pod(s) of the assistant not gone yet`;

    const pod = await this.#read(customer);
    if (pod?.metadata?.deletionTimestamp) return 'an earlier restore pod is still stopping';
    if (pod) {
      const phase = pod.status?.phase ?? 'Pending';
      const running = (pod.status?.containerStatuses ?? []).some((c) => c.name === RESTORE_CONTAINER && c.state?.running);
      if (phase === 'Running' && running) return undefined;
      if (phase === 'Failed' || phase === 'Succeeded') {
        await this.#delete(pod);
        return `an earlier restore pod ended (${phase}); replacing it`;
      }
      return `the restore pod is ${phase}`;
    }
    const claim = await this.#guard('readPersistentVolumeClaim', () =>
      this.#core.readNamespacedPersistentVolumeClaim({ name: objectName(customer), namespace }).catch(notFoundAsUndefined),
    );
    if (!claim || !isOurs(claim.metadata, CUSTOMER_LABEL, customer))
      throw new Error(`customer ${customer} has no PersistentVolumeClaim of Blytz's to restore into`);
    const body = restorePodManifest(customer, deployment, mountPath, { namespace, extraLabels: this.#extraLabels });
    await this.#guard('createPod', () => this.#core.createNamespacedPod({ namespace, body }), { retry: false });
    return 'the restore pod was just created';
  }

  /** Runs `command` in the restore pod (which `open` started), `stdin` streamed in. */
  async exec(customer: string, command: string[], stdin?: Readable, timeoutMs = 30 * 60_000): Promise<ExecResult> {
    const target = { namespace: this.#namespace, pod: restorePodName(customer), container: RESTORE_CONTAINER };
    return this.#guard(
      'exec',
      (signal) => runPodExec(this.#exec, target, command, timeoutMs, signal, EXEC_CONNECT_TIMEOUT_MS, undefined, stdin),
      { retry: false, timeoutMs: timeoutMs + EXEC_CONNECT_TIMEOUT_MS + 10_000 },
    );
  }

  /** Whether the customer's restore pod runs (a leftover to clean up with). */
  async isOpen(customer: string): Promise<boolean> {
    const pod = await this.#read(customer);
    return pod !== undefined && !pod.metadata?.deletionTimestamp && pod.status?.phase === 'Running';
  }

  /** Deletes the customer's restore pod and waits until it is gone (the claim is free for the assistant again). */
  async close(customer: string): Promise<void> {
    const deadline = Date.now() + this.#waitMs;
    for (;;) {
      const pod = await this.#read(customer);
      if (!pod) return;
      if (!pod.metadata?.deletionTimestamp) await this.#delete(pod);
      if (Date.now() >= deadline)
        throw new Error(`restore pod of ${customer} not gone after ${Math.round(this.#waitMs / 1000)} s`);
      await sleep(this.#lookMs);
    }
  }

  /** The customer's restore pod; one of that name Blytz did not make is an error, never touched. */
  async #read(customer: string): Promise<V1Pod | undefined> {
    const name = restorePodName(customer);
    const pod = await this.#guard('readPod', () =>
      this.#core.readNamespacedPod({ name, namespace: this.#namespace }).catch(notFoundAsUndefined),
    );
    if (pod && !isOurs(pod.metadata, RESTORE_OF_LABEL, customer))
      throw new Error(`pod ${name} exists but was not made by Blytz to restore ${customer}: rename or delete it`);
    return pod;
  }

  async #delete(pod: V1Pod): Promise<void> {
    const name = pod.metadata?.name ?? '';
    const uid = pod.metadata?.uid ?? '';
    await this.#guard('deletePod', () =>
      this.#core
        .deleteNamespacedPod({ name, namespace: this.#namespace, body: { preconditions: { uid } } })
        .then(() => undefined, notFoundAsUndefined),
    );
  }
}

function notFoundAsUndefined(error: unknown): undefined {
  if (isNotFound(error)) return undefined;
  throw error;
}

function isOurs(meta: V1ObjectMeta | undefined, label: string, customer: string): boolean {
  const labels = meta?.labels ?? {};
  return labels[MANAGED_BY_LABEL] === MANAGED_BY_VALUE && labels[label] === customer;
}
