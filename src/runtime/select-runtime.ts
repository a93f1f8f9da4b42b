import { join } from 'node:path';
import Docker from 'dockerode';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Config } from '../config.js';
import { currentNamespace, loadKubeConfig } from '../kube-api/client.js';
import type { Logger } from '../observability/logger.js';
import { projectRoot } from '../paths.js';
import type { Policies } from '../resilience/policies.js';
import { FileWorkspaces, POOL_DIR } from '../workspace/file-workspaces.js';
import { PoolFolders } from '../workspace/pool-folders.js';
import type { Workspaces } from '../workspace/workspace.js';
import type { AddressLister } from './customer-addresses.js';
import { dockerContainerAddresses } from './docker/container-addresses.js';
import { PROBE_CLIENT_ADDRESS } from '../domain/probes.js';
import { DockerEventSource } from './docker/docker-events.js';
import { DockerRuntime } from './docker/docker-runtime.js';
import { KubernetesRuntime } from './kubernetes/kubernetes-runtime.js';
import { KubernetesRestorePods } from './kubernetes/restore-pod.js';
import { KubernetesWorkspaces } from './kubernetes/kubernetes-workspaces.js';
import { podAddresses } from './kubernetes/pod-addresses.js';
import { CADDY_POD_LABELS, DEFAULT_BLOCKED_CIDRS, type CustomerNetwork } from './kubernetes/manifests.js';
import { OwnedObjectsWatch } from '../kube-api/owned-objects-watch.js';
import type { EventSource } from '../controller/event-source.js';
import type { CustomerRuntime, PoolRuntime } from './runtime.js';

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
  /** Every running customer container's (pod's) addresses: the model gateway's source check. */
  addresses: AddressLister;
  /** Kubernetes: the pods a restore writes a stopped customer's claim through (Docker writes its folder). */
  restorePods?: KubernetesRestorePods;
  /**
   * What warm pools run on (domain/pool.ts): Docker only in this version. The slots' containers
   * through the same runtime, their folders under `$BLYTZ_DATA_DIR/pool/`, and how a claimed
   * slot's folder becomes its customer's.
   */
  pools?: { runtime: CustomerRuntime & PoolRuntime; workspaces: Workspaces; folders: PoolFolders };
}

export interface SelectRuntimeDeps {
  policies: Policies;
  logger: Logger;
  /** Only called for BLYTZ_RUNTIME=kubernetes. */
  kube: () => KubeTarget;
}

export function selectRuntime(config: Config, deps: SelectRuntimeDeps): SelectedRuntime {
  const extraLabels = config.BLYTZ_INSTANCE ? { 'cloud.blytz.instance': config.BLYTZ_INSTANCE } : {};
  const fileOptions = {
    dataDir: config.BLYTZ_DATA_DIR,
    templatesDir: join(projectRoot(), 'templates'),
    defaults: { image: config.BLYTZ_CUSTOMER_IMAGE, containerPort: config.BLYTZ_CONTAINER_PORT },
    // On Kubernetes no container mounts this folder (pods read their files from a Secret).
    ownership: config.BLYTZ_RUNTIME === 'kubernetes' ? ('controller' as const) : ('container' as const),
  };
  const files = new FileWorkspaces(fileOptions);

  if (config.BLYTZ_RUNTIME === 'kubernetes') {
    const { kubeConfig, namespace } = deps.kube();
    const runtime = new KubernetesRuntime(deps.policies.guard('kubernetes'), {
      kubeConfig,
      namespace,
      extraLabels,
      network: customerNetwork(config),
    });
    return {
      kind: 'kubernetes',
      runtime,
      workspaces: new KubernetesWorkspaces(files, runtime),
      healthName: 'kubernetes',
      imagePresent: () => Promise.resolve(true),
      sources: [new OwnedObjectsWatch({ kubeConfig, ...runtime.ownedKinds(), logger: deps.logger })],
      defaultTrustedProxies: () => Promise.resolve([]),
      addresses: podAddresses(kubeConfig, namespace, deps.policies.guard('kubernetes'), extraLabels),
      restorePods: new KubernetesRestorePods(deps.policies.guard('kubernetes'), { kubeConfig, namespace, extraLabels }),
    };
  }

  const docker = new Docker(dockerOptions(config.DOCKER_HOST));
  // The probes name a client (X-Forwarded-For): they arrive from the address the gateway trusts as its proxy.
  const runtime = new DockerRuntime(deps.policies.guard('docker'), {
    docker,
    extraLabels,
    probeForwardedFor: PROBE_CLIENT_ADDRESS,
    networkPool: config.BLYTZ_DOCKER_NETWORK_POOL,
  });
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
    addresses: dockerContainerAddresses(docker, deps.policies.guard('docker'), extraLabels),
    pools: (() => {
      const slots = new FileWorkspaces({ ...fileOptions, folder: POOL_DIR });
      return { runtime, workspaces: slots, folders: new PoolFolders(slots, files) };
    })(),
  };
}

/**
 * Who may reach a customer's pod and what it may reach (its NetworkPolicy): in from the kit's
 * Caddy pods, or with BLYTZ_ROUTES=ingress from the ingress controller's pods
 * (BLYTZ_INGRESS_CONTROLLER_NAMESPACE, _PODS); out to the model gateway's pods when it runs
 * (BLYTZ_MODEL_GATEWAY_PORT, else the port of BLYTZ_MODEL_GATEWAY_LISTEN); never to the
 * cluster's own ranges or the metadata service.
 */
export function customerNetwork(
  config: Pick<
    Config,
    | 'BLYTZ_ROUTES'
    | 'BLYTZ_INGRESS_CONTROLLER_NAMESPACE'
    | 'BLYTZ_INGRESS_CONTROLLER_PODS'
    | 'BLYTZ_MODEL_GATEWAY_PODS'
    | 'BLYTZ_MODEL_GATEWAY_PORT'
    | 'BLYTZ_MODEL_GATEWAY_LISTEN'
  >,
): CustomerNetwork {
  // The gateway's port: set, or the one it listens on.
  const listenPort = Number(/:(\d+)$/.exec(config.BLYTZ_MODEL_GATEWAY_LISTEN ?? '')?.[1]);
  const modelGatewayPort = config.BLYTZ_MODEL_GATEWAY_PORT ?? (Number.isInteger(listenPort) && listenPort > 0 ? listenPort : undefined);
  const ingressController = {
    namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': config.BLYTZ_INGRESS_CONTROLLER_NAMESPACE } },
    podSelector: { matchLabels: config.BLYTZ_INGRESS_CONTROLLER_PODS },
  };
  return {
    ingressFrom: config.BLYTZ_ROUTES === 'ingress' ? [ingressController] : [{ podSelector: { matchLabels: CADDY_POD_LABELS } }],
    modelGateway: modelGatewayPort === undefined ? undefined : { podSelector: config.BLYTZ_MODEL_GATEWAY_PODS, port: modelGatewayPort },
    blockedCidrs: DEFAULT_BLOCKED_CIDRS,
  };
}

function dockerOptions(dockerHost: string): Docker.DockerOptions {
  const url = new URL(dockerHost);
  if (url.protocol === 'unix:') return { socketPath: url.pathname };
  return { host: url.hostname, port: Number(url.port || 2375), protocol: url.protocol === 'https:' ? 'https' : 'http' };
}
