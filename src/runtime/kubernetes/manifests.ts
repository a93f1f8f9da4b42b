import { createHash } from 'node:crypto';
import type { V1Deployment, V1DeploymentStrategy, V1PersistentVolumeClaim, V1Secret, V1Service } from '@kubernetes/client-node';
import { CUSTOMER_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SPEC_HASH_LABEL } from '../../domain/naming.js';
import { CONTAINER_PORT_LABEL, HOST_PORT_LABEL } from '../../domain/labels.js';
import type { ContainerSpec } from '../runtime.js';
import { objectName } from './names.js';

/**
 * The four objects of one customer, as pure functions of its ContainerSpec (no API calls), so
 * they can be checked without a cluster. Security mirrors the Docker runtime: a numeric non-root
 * user, no privilege escalation, every capability dropped, RuntimeDefault seccomp, memory and CPU
 * limits from the plan. (Kubernetes has no per-pod pids limit in the pod spec; the kubelet's
 * podPidsLimit is the cluster's equivalent of the plan's pidsLimit.)
 *
 * Rendered files travel in the Secret, mounted read-only at RENDERED_DIR. An init container
 * links each rendered path of the workspace (on the PVC) to its Secret file, so the assistant
 * finds AGENTS.md, openclaw.json, ... where Docker's bind mount puts them, its own files
 * (memory) persist on the PVC, and a re-rendered Secret reaches the running pod without a restart
 * (the kubelet refreshes Secret volumes in place). The image must provide `sh`, `mkdir`, `ln`.
 */

/** The assistant's container in each customer's pod (exec targets it). */
export const ASSISTANT_CONTAINER = 'assistant';

export const RENDERED_DIR = '/blytz/rendered';
/** The rendered files' content hash: a changed Secret is rewritten, an unchanged one is left alone. */
export const CONTENT_HASH_ANNOTATION = 'cloud.blytz.content-hash';
const SEED_SCRIPT = [
  'set -eu',
  'for pair in "$@"; do',
  '  key="${pair%%=*}"; rel="${pair#*=}"; target="$WORKSPACE/$rel"',
  '  mkdir -p "$(dirname "$target")"',
  '  rm -rf "$target"',
  `  ln -s "${RENDERED_DIR}/$key" "$target"`,
  'done',
].join('\n');

export interface RenderedFileData {
  /** Relative POSIX path in the workspace. */
  path: string;
  content: Buffer;
}

export interface ManifestOptions {
  namespace: string;
  extraLabels: Record<string, string>;
  storageSize: string;
  storageClassName?: string | undefined;
  imagePullPolicy?: 'Always' | 'IfNotPresent' | 'Never' | undefined;
}

const NON_ROOT_USER = /^([1-9]\d*)(?::(\d+))?$/;

/** Secret keys allow only [-._a-zA-Z0-9]: files are stored as `f<n>` and mapped back by the seed step. */
export function fileKeys(files: readonly RenderedFileData[]): Array<{ key: string; path: string }> {
  return [...files].sort((a, b) => (a.path < b.path ? -1 : 1)).map((file, i) => ({ key: `f${i}`, path: file.path }));
}

export function contentHash(files: readonly RenderedFileData[]): string {
  const hash = createHash('sha256');
  for (const file of [...files].sort((a, b) => (a.path < b.path ? -1 : 1))) {
    hash.update(file.path).update('\0').update(file.content).update('\0');
  }
  return hash.digest('hex').slice(0, 16);
}

export function baseLabels(customer: string, extraLabels: Record<string, string>): Record<string, string> {
  return { ...extraLabels, [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, [CUSTOMER_LABEL]: customer };
}

/** Everything but the spec hash: the Secret, PVC and Service do not change with it. */
function meta(customer: string, options: ManifestOptions, more: Record<string, string> = {}) {
  return {
    name: objectName(customer),
    namespace: options.namespace,
    labels: { ...baseLabels(customer, options.extraLabels), ...more },
  };
}

const MAX_SECRET_BYTES = 1024 * 1024 - 16 * 1024; // the API server's 1 MiB, less room for metadata

export function secretManifest(customer: string, files: readonly RenderedFileData[], options: ManifestOptions): V1Secret {
  const keys = fileKeys(files);
  const byPath = new Map(files.map((f) => [f.path, f.content]));
  const data: Record<string, string> = {};
  let bytes = 0;
  for (const { key, path } of keys) {
    const content = byPath.get(path) ?? Buffer.alloc(0);
    bytes += content.length;
    data[key] = content.toString('base64');
  }
  if (bytes > MAX_SECRET_BYTES)
    throw new Error(`rendered files of ${customer} are ${bytes} bytes; a Kubernetes Secret holds at most 1 MiB`);
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    metadata: { ...meta(customer, options), annotations: { [CONTENT_HASH_ANNOTATION]: contentHash(files) } },
    type: 'Opaque',
    data,
  };
}

export function pvcManifest(customer: string, options: ManifestOptions): V1PersistentVolumeClaim {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: meta(customer, options),
    spec: {
      accessModes: ['ReadWriteOnce'],
      resources: { requests: { storage: options.storageSize } },
      ...(options.storageClassName ? { storageClassName: options.storageClassName } : {}),
    },
  };
}

export function serviceManifest(spec: ContainerSpec, options: ManifestOptions): V1Service {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: meta(spec.customer, options, { [HOST_PORT_LABEL]: String(spec.hostPort) }),
    spec: {
      type: 'ClusterIP',
      selector: { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, [CUSTOMER_LABEL]: spec.customer },
      // The reserved "host port" becomes the Service port: routes keep one port per customer.
      ports: [{ name: 'http', protocol: 'TCP', port: spec.hostPort, targetPort: spec.containerPort }],
    },
  };
}

/** The Deployment, created with 0 replicas: `create` does not start (CustomerRuntime's contract). */
export function deploymentManifest(
  spec: ContainerSpec,
  files: readonly RenderedFileData[],
  options: ManifestOptions,
): V1Deployment {
  const user = NON_ROOT_USER.exec(spec.user);
  if (!user) throw new Error(`container user ${JSON.stringify(spec.user)} must be a numeric non-root uid[:gid]`);
  const uid = Number(user[1]);
  const gid = user[2] === undefined ? uid : Number(user[2]);
  const workspace = spec.mounts.find((m) => !m.readOnly);
  if (!workspace) throw new Error('the container spec has no writable workspace mount');
  const name = objectName(spec.customer);
  const labels = { ...baseLabels(spec.customer, options.extraLabels), [SPEC_HASH_LABEL]: spec.specHash };
  const containerSecurity = {
    runAsNonRoot: true,
    runAsUser: uid,
    runAsGroup: gid,
    allowPrivilegeEscalation: false,
    privileged: false,
    capabilities: { drop: ['ALL'] },
    seccompProfile: { type: 'RuntimeDefault' },
  };
  const cpu = `${Math.max(1, Math.round(spec.resources.nanoCpus / 1_000_000))}m`;
  const memory = String(spec.resources.memoryBytes);
  const probe = (path: string) => ({ httpGet: { path, port: 'http' }, periodSeconds: 10, timeoutSeconds: 2 });
  const startupPeriodSeconds = 5;
  const mounts = [
    { name: 'workspace', mountPath: workspace.containerPath },
    { name: 'rendered', mountPath: RENDERED_DIR, readOnly: true },
  ];
  const pullPolicy = options.imagePullPolicy ? { imagePullPolicy: options.imagePullPolicy } : {};
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: {
      name,
      namespace: options.namespace,
      labels: { ...labels, [HOST_PORT_LABEL]: String(spec.hostPort), [CONTAINER_PORT_LABEL]: String(spec.containerPort) },
    },
    spec: {
      replicas: 0,
      strategy: deploymentStrategy(spec.updateStrategy),
      selector: { matchLabels: baseLabels(spec.customer, {}) },
      template: {
        metadata: { labels },
        spec: {
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          securityContext: {
            runAsNonRoot: true,
            runAsUser: uid,
            runAsGroup: gid,
            fsGroup: gid,
            seccompProfile: { type: 'RuntimeDefault' },
          },
          initContainers: [
            {
              name: 'seed',
              image: spec.image,
              ...pullPolicy,
              // Paths are arguments, never part of the script text.
              command: ['sh', '-c', SEED_SCRIPT, 'seed', ...fileKeys(files).map(({ key, path }) => `${key}=${path}`)],
              env: [{ name: 'WORKSPACE', value: workspace.containerPath }],
              securityContext: containerSecurity,
              resources: { limits: { cpu: '100m', memory: '64Mi' }, requests: { cpu: '10m', memory: '16Mi' } },
              volumeMounts: mounts,
            },
          ],
          containers: [
            {
              name: ASSISTANT_CONTAINER,
              image: spec.image,
              ...pullPolicy,
              ports: [{ name: 'http', containerPort: spec.containerPort, protocol: 'TCP' }],
              env: Object.entries(spec.env).map(([k, v]) => ({ name: k, value: v })),
              securityContext: containerSecurity,
              resources: { limits: { cpu, memory }, requests: { cpu, memory } },
              readinessProbe: probe(spec.probes.readiness.path),
              livenessProbe: { ...probe(spec.probes.liveness.path), failureThreshold: 6 },
              // Slow first starts are not failures: the template's start timeout before liveness applies.
              startupProbe: {
                ...probe((spec.probes.startup ?? spec.probes.liveness).path),
                periodSeconds: startupPeriodSeconds,
                failureThreshold: Math.max(1, Math.ceil(spec.startTimeoutSeconds / startupPeriodSeconds)),
              },
              volumeMounts: mounts,
            },
          ],
          volumes: [
            { name: 'workspace', persistentVolumeClaim: { claimName: name } },
            { name: 'rendered', secret: { secretName: name, defaultMode: 0o440 } },
          ],
        },
      },
    },
  };
}

/**
 * The Deployment's update strategy from the template's `updateStrategy`. `recreate` (OpenClaw:
 * two pods long-polling one Telegram bot conflict) stops the old pod first. `blueGreen` starts the
 * new pod beside the old one and removes the old one only once the new one is ready (one extra,
 * none missing). That needs a workspace volume two pods can mount at once: with a
 * ReadWriteOnce claim the new pod can only start on the old pod's node.
 */
export function deploymentStrategy(updateStrategy: 'recreate' | 'blueGreen' | undefined): V1DeploymentStrategy {
  return updateStrategy === 'blueGreen'
    ? { type: 'RollingUpdate', rollingUpdate: { maxSurge: 1, maxUnavailable: 0 } }
    : { type: 'Recreate' };
}
