import { createHash } from 'node:crypto';
import type {
  V1Deployment,
  V1DeploymentStrategy,
  V1NetworkPolicy,
  V1NetworkPolicyPeer,
  V1PersistentVolumeClaim,
  V1Secret,
  V1Service,
} from '@kubernetes/client-node';
import { CUSTOMER_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, SPEC_HASH_LABEL } from '../../domain/naming.js';
import { CONTAINER_PORT_LABEL, HOST_PORT_LABEL, OWN_HASH_LABEL } from '../../domain/labels.js';
import { TMPFS_MIB, type ContainerSpec } from '../runtime.js';
import { PROBE_CLIENT_ADDRESS, type HttpProbe } from '../../domain/probes.js';
import { OPENCLAW_CONFIG_FILE } from '../../workspace/render.js';
import { ownedProjection, type JsonObject } from '../../workspace/openclaw-config.js';
import { stableHash } from '../../domain/canonical-json.js';
import { baseLabels, objectName } from '../../kube-api/customer-object-meta.js';
import { probeCommand, RENDERED_DIR, seedCommand } from './pod-scripts.js';

/**
 * The objects of one customer, as pure functions of its ContainerSpec (no API calls), so they
 * can be checked without a cluster. Security mirrors the Docker runtime: a numeric non-root user,
 * no privilege escalation, every capability dropped, RuntimeDefault seccomp, a read-only root
 * file system with the template's tmpfs folders as memory-backed emptyDirs, memory and CPU limits
 * from the plan. (Kubernetes has no per-pod pids limit in the pod spec; the kubelet's
 * podPidsLimit is the cluster's equivalent of the plan's pidsLimit.)
 *
 * Rendered files travel in the Secret, mounted read-only at RENDERED_DIR. An init container (the
 * seed, pod-scripts.ts) prepares the workspace volume (the PVC) from them before the assistant
 * starts: each rendered file is linked to its Secret copy, so the assistant finds AGENTS.md, ...
 * where Docker's bind mount puts them, its own files (memory) persist on the PVC, and a re-render
 * reaches the running pod without a restart (the kubelet refreshes Secret volumes in place).
 * openclaw.json is the exception: OpenClaw writes it too, so the seed merges the controller's
 * fields into the copy on the volume, and a change of those fields restarts the pod (the pod
 * template's OWNED_CONFIG_ANNOTATION) so the next seed merges it. The image must provide `node`.
 */

/** The assistant's container in each customer's pod (exec targets it). */
export const ASSISTANT_CONTAINER = 'assistant';

/** The rendered files' content hash: a changed Secret is rewritten, an unchanged one is left alone. */
export const CONTENT_HASH_ANNOTATION = 'cloud.blytz.content-hash';

/**
 * On the pod template: a hash of the controller's fields of openclaw.json. The seed merges them
 * into the file on the volume when a pod starts; a new hash is a new pod template, so the
 * Deployment replaces the pod and the new fields reach the gateway.
 */
export const OWNED_CONFIG_ANNOTATION = 'cloud.blytz/owned-config-hash';

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
  /** Who may reach a customer's pod and what it may reach (its NetworkPolicy). */
  network?: CustomerNetwork | undefined;
}

/**
 * A customer's pod runs an AI agent with shell tools: treat it as hostile. Its NetworkPolicy
 * denies everything but this.
 */
export interface CustomerNetwork {
  /** Who may connect in (the assistant's port only): Caddy's pods, or the ingress controller's namespace. */
  ingressFrom: V1NetworkPolicyPeer[];
  /** The model gateway (a Service of the controller, issue 23): its pods and port; unset: no way to it. */
  modelGateway?: { podSelector: Record<string, string>; port: number } | undefined;
  /** Never reachable, even though "the internet" is: the cluster's own ranges and link-local (cloud metadata). */
  blockedCidrs: { v4: string[]; v6: string[] };
}

/** The kit's Caddy pods (deploy/kubernetes/caddy.yaml). */
export const CADDY_POD_LABELS = { 'app.kubernetes.io/name': 'blytz', 'app.kubernetes.io/component': 'caddy' };
/** The kit's controller pods (deploy/kubernetes/deployment.yaml), where the model gateway will serve. */
export const CONTROLLER_POD_LABELS = { 'app.kubernetes.io/name': 'blytz', 'app.kubernetes.io/component': 'controller' };

/**
 * Private and shared ranges (where pod, Service and node addresses live on every common
 * distribution) and link-local, which holds the cloud metadata service 169.254.169.254 (and
 * fd00:ec2::254 is in fc00::/7).
 */
export const DEFAULT_BLOCKED_CIDRS = {
  v4: ['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', '169.254.0.0/16'],
  v6: ['fc00::/7', 'fe80::/10'],
};

export const DEFAULT_NETWORK: CustomerNetwork = {
  ingressFrom: [{ podSelector: { matchLabels: CADDY_POD_LABELS } }],
  blockedCidrs: DEFAULT_BLOCKED_CIDRS,
};

const NON_ROOT_USER = /^([1-9]\d*)(?::(\d+))?$/;

/**
 * Secret keys allow only [-._a-zA-Z0-9]: a file is stored under its path with every other
 * character made `_`, plus 8 hex of the path's hash (two paths that read alike never share a
 * key). The key depends on the path alone: a running pod's links (made when it started) keep
 * pointing at the same files whatever the template adds or drops later, where a numbering by
 * position would shift under them.
 */
export function fileKeys(files: readonly RenderedFileData[]): Array<{ key: string; path: string }> {
  return [...files].sort((a, b) => (a.path < b.path ? -1 : 1)).map((file) => ({ key: fileKey(file.path), path: file.path }));
}

function fileKey(path: string): string {
  const readable = path.replace(/[^-._a-zA-Z0-9]/g, '_').slice(0, 200);
  return `${readable}-${createHash('sha256').update(path).digest('hex').slice(0, 8)}`;
}

export function contentHash(files: readonly RenderedFileData[]): string {
  const hash = createHash('sha256');
  for (const file of [...files].sort((a, b) => (a.path < b.path ? -1 : 1))) {
    hash.update(file.path).update('\0').update(file.content).update('\0');
  }
  return hash.digest('hex').slice(0, 16);
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

/**
 * Default deny, both ways, for the customer's pods; then: in from `ingressFrom` to the
 * assistant's port; out to cluster DNS (kube-system's kube-dns pods, port 53), the model gateway
 * when there is one, and the internet (any address outside `blockedCidrs`): never another
 * customer, the controller, Postgres, the API server's cluster address or the metadata service.
 */
export function networkPolicyManifest(spec: ContainerSpec, options: ManifestOptions): V1NetworkPolicy {
  const network = options.network ?? DEFAULT_NETWORK;
  const dns = {
    to: [
      {
        namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'kube-system' } },
        podSelector: { matchLabels: { 'k8s-app': 'kube-dns' } },
      },
    ],
    ports: [
      { protocol: 'UDP', port: 53 },
      { protocol: 'TCP', port: 53 },
    ],
  };
  const gateway = network.modelGateway
    ? [
        {
          to: [{ podSelector: { matchLabels: network.modelGateway.podSelector } }],
          ports: [{ protocol: 'TCP', port: network.modelGateway.port }],
        },
      ]
    : [];
  const internet = {
    to: [
      { ipBlock: { cidr: '0.0.0.0/0', except: network.blockedCidrs.v4 } },
      { ipBlock: { cidr: '::/0', except: network.blockedCidrs.v6 } },
    ],
  };
  return {
    apiVersion: 'networking.k8s.io/v1',
    kind: 'NetworkPolicy',
    metadata: meta(spec.customer, options),
    spec: {
      podSelector: { matchLabels: baseLabels(spec.customer, {}) },
      policyTypes: ['Ingress', 'Egress'],
      ingress: [{ _from: network.ingressFrom, ports: [{ protocol: 'TCP', port: spec.containerPort }] }],
      egress: [dns, ...gateway, internet],
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
  // Exec probes that check the body (pod-scripts.ts), each a short Node process in the container.
  const probe = (declared: HttpProbe) => ({
    exec: { command: probeCommand(declared, spec.containerPort, PROBE_CLIENT_ADDRESS) },
    periodSeconds: 10,
    timeoutSeconds: 5,
  });
  const startupPeriodSeconds = 5;
  const tmpfs = spec.tmpfs.map((path, i) => {
    if (!path.startsWith('/')) throw new Error(`tmpfs path ${JSON.stringify(path)} must be absolute`);
    return { name: `tmpfs-${i}`, path };
  });
  const mounts = [
    { name: 'workspace', mountPath: workspace.containerPath },
    { name: 'rendered', mountPath: RENDERED_DIR, readOnly: true },
  ];
  const pullPolicy = options.imagePullPolicy ? { imagePullPolicy: options.imagePullPolicy } : {};
  const keys = fileKeys(files);
  const config = keys.find((k) => k.path === OPENCLAW_CONFIG_FILE);
  const configContent = files.find((f) => f.path === OPENCLAW_CONFIG_FILE)?.content;
  return {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: {
      name,
      namespace: options.namespace,
      labels: {
        ...labels,
        [HOST_PORT_LABEL]: String(spec.hostPort),
        [CONTAINER_PORT_LABEL]: String(spec.containerPort),
        // The customer's own part of the spec: a change of it is the customer's, never a fleet rollout's.
        ...(spec.ownHash === undefined ? {} : { [OWN_HASH_LABEL]: spec.ownHash }),
      },
    },
    spec: {
      replicas: 0,
      strategy: deploymentStrategy(spec.updateStrategy),
      selector: { matchLabels: baseLabels(spec.customer, {}) },
      template: {
        metadata: {
          labels,
          ...(configContent ? { annotations: { [OWNED_CONFIG_ANNOTATION]: ownedConfigHash(configContent) } } : {}),
        },
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
              // Paths and keys are one JSON argument, never part of the program text.
              command: seedCommand({
                workspace: workspace.containerPath,
                rendered: RENDERED_DIR,
                links: keys.filter((k) => k !== config),
                config,
              }),
              securityContext: { ...containerSecurity, readOnlyRootFilesystem: true },
              resources: { limits: { cpu: '250m', memory: '128Mi' }, requests: { cpu: '10m', memory: '64Mi' } },
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
              securityContext: { ...containerSecurity, readOnlyRootFilesystem: true },
              resources: { limits: { cpu, memory }, requests: { cpu, memory } },
              readinessProbe: probe(spec.probes.readiness),
              livenessProbe: { ...probe(spec.probes.liveness), failureThreshold: 6 },
              // Slow first starts are not failures: the template's start timeout before liveness applies.
              startupProbe: {
                ...probe(spec.probes.startup ?? spec.probes.liveness),
                periodSeconds: startupPeriodSeconds,
                failureThreshold: Math.max(1, Math.ceil(spec.startTimeoutSeconds / startupPeriodSeconds)),
              },
              // Writable: the workspace volume and the template's tmpfs folders; the rest is read-only.
              volumeMounts: [...mounts, ...tmpfs.map(({ name: volume, path }) => ({ name: volume, mountPath: path }))],
            },
          ],
          volumes: [
            { name: 'workspace', persistentVolumeClaim: { claimName: name } },
            { name: 'rendered', secret: { secretName: name, defaultMode: 0o440 } },
            // Memory-backed, emptied with the pod, counted against its memory limit as it fills.
            ...tmpfs.map(({ name: volume }) => ({ name: volume, emptyDir: { medium: 'Memory', sizeLimit: `${TMPFS_MIB}Mi` } })),
          ],
        },
      },
    },
  };
}

/**
 * The pod template's OWNED_CONFIG_ANNOTATION: a hash of the controller's fields of the rendered
 * openclaw.json as data (key order and formatting do not count, so a re-render into a fresh
 * folder after a controller restart restarts no pod).
 */
export function ownedConfigHash(content: Buffer): string {
  let config: JsonObject = {};
  try {
    const parsed: unknown = JSON.parse(content.toString('utf8'));
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed)) config = parsed as JsonObject;
  } catch {
    // Not JSON: the seed would fail on it too; the hash of nothing still changes when it is fixed.
  }
  return stableHash(ownedProjection(config));
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
