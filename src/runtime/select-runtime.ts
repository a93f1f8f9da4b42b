import { join } from 'node:path';
import Docker from 'dockerode';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Config } from '../config.js';
import { currentNamespace, loadKubeConfig } from '../kubernetes/client.js';
import type { Logger } from '../observability/logger.js';
import { projectRoot } from '../paths.js';
import type { Policies } from '../resilience/policies.js';
import { FileWorkspaces } from '../workspace/file-workspaces.js';
import type { Workspaces } from '../workspace/workspace.js';
import { DockerEventSource } from './docker/docker-events.js';
import { PROBE_CLIENT_ADDRESS } from './docker/health.js';
import { DockerRuntime } from './docker/docker-runtime.js';
import { KubernetesRuntime } from './kubernetes/kubernetes-runtime.js';
import { KubernetesWorkspaces } from './kubernetes/kubernetes-workspaces.js';
import { OwnedObjectsWatch } from './kubernetes/owned-objects-watch.js';
import type { EventSource } from '../controller/event-source.js';
import type { CustomerRuntime } from './runtime.js';

/**
 * Part of the composition root (with server.ts): builds the runtime chosen by BLYTZ_RUNTIME
 * and what comes with it. Nothing else knows which one runs.
 *
 *   docker      DockerRuntime (guard `docker`), FileWorkspaces, the Docker event stream
 *               (BLYTZ_DOCKER_EVENTS), readiness check `docker`
 *   kubernetes  KubernetesRuntime (guard `kubernetes`) in the kubeconfig's namespace,
 *               KubernetesWorkspaces (renders locally, copies into each customer's Secret, purges
 *               the PVC), a watch on the objects it owns (OwnedObjectsWatch), readiness check
 *               `kubernetes`
 */

/** The cluster and namespace to work in (BLYTZ_RUNTIME or BLYTZ_SOURCE = kubernetes). */
export interface KubeTarget {
  kubeConfig: KubeConfig;
  namespace: string;
}

/** In a pod: its service account; elsewhere $KUBECONFIG or ~/.kube/config. Namespace: BLYTZ_NAMESPACE, the pod's, the context's, `default`. */
export function kubeTarget(config: Pick<Config, 'BLYTZ_NAMESPACE'>, env: NodeJS.ProcessEnv = process.env): KubeTarget {
  const kubeConfig = loadKubeConfig(env);
  return { kubeConfig, namespace: currentNamespace(kubeConfig, config.BLYTZ_NAMESPACE) };
}

export interface SelectedRuntime {
  kind: Config['BLYTZ_RUNTIME'];
  runtime: CustomerRuntime;
  workspaces: Workspaces;
  /** Name of the readiness check that pings the runtime (`/readyz` checks). */
  healthName: 'docker' | 'kubernetes';
  /**
   * Whether an image is already where containers start, checked once per fleet rollout. Docker:
   * the local engine. Kubernetes: always true, as the kubelet pulls on its nodes and no API tells
   * beforehand; a missing image shows as unhealthy pods, which roll back and pause the rollout.
   */
  imagePresent(image: string): Promise<boolean>;
  /** The runtime's own hints about customers (unwrapped: the caller adds cache invalidation). */
  sources: EventSource[];
  /**
   * The addresses requests from the proxy reach a customer's gateway from, which it must trust to
   * take the client from X-Forwarded-For (BLYTZ_ASSISTANT_TRUSTED_PROXIES overrides). Docker: the
   * gateway of the customers' bridge (the port publish's proxy connects from it). Kubernetes: none
   * known (the pod CIDR is the cluster's; the operator sets it).
   */
  defaultTrustedProxies(): Promise<string[]>;
}

export interface SelectRuntimeDeps {
  policies: Policies;
  logger: Logger;
  /** Only called for BLYTZ_RUNTIME=kubernetes. */
  kube: () => KubeTarget;
}

export function selectRuntime(config: Config, deps: SelectRuntimeDeps): SelectedRuntime {
  const extraLabels = config.BLYTZ_INSTANCE ? { 'cloud.blytz.instance': config.BLYTZ_INSTANCE } : {};
  const files = new FileWorkspaces({
    dataDir: config.BLYTZ_DATA_DIR,
    templatesDir: join(projectRoot(), 'templates'),
    defaults: { image: config.BLYTZ_CUSTOMER_IMAGE, containerPort: config.BLYTZ_CONTAINER_PORT },
  });

  if (config.BLYTZ_RUNTIME === 'kubernetes') {
    const { kubeConfig, namespace } = deps.kube();
    const runtime = new KubernetesRuntime(deps.policies.guard('kubernetes'), { kubeConfig, namespace, extraLabels });
    return {
      kind: 'kubernetes',
      runtime,
      workspaces: new KubernetesWorkspaces(files, runtime),
      healthName: 'kubernetes',
      imagePresent: () => Promise.resolve(true),
      sources: [new OwnedObjectsWatch({ kubeConfig, ...runtime.ownedKinds(), logger: deps.logger })],
      defaultTrustedProxies: () => Promise.resolve([]),
    };
  }

  const docker = new Docker(dockerOptions(config.DOCKER_HOST));
  // The probes name a client (X-Forwarded-For): they arrive from the address the gateway trusts as its proxy.
  const runtime = new DockerRuntime(deps.policies.guard('docker'), { docker, extraLabels, probeForwardedFor: PROBE_CLIENT_ADDRESS });
  const sources: EventSource[] = [];
  // A local engine restarts in seconds: reconnect within 5 s, not the default 30 s ceiling.
  if (config.BLYTZ_DOCKER_EVENTS) {
    sources.push(
      new DockerEventSource(deps.policies.guard('docker'), { docker, extraLabels, logger: deps.logger, maxReconnectMs: 5000 }),
    );
  }
  return {
    kind: 'docker',
    runtime,
    workspaces: files,
    healthName: 'docker',
    imagePresent: (image) => runtime.imagePresent(image),
    sources,
    defaultTrustedProxies: () => runtime.bridgeGateways(),
  };
}

function dockerOptions(dockerHost: string): Docker.DockerOptions {
  const url = new URL(dockerHost);
  if (url.protocol === 'unix:') return { socketPath: url.pathname };
  return { host: url.hostname, port: Number(url.port || 2375), protocol: url.protocol === 'https:' ? 'https' : 'http' };
}
