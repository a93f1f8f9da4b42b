import type { V1Deployment } from '@kubernetes/client-node';
import { CUSTOMER_LABEL, SPEC_HASH_LABEL } from '../../domain/naming.js';
import { HOST_PORT_LABEL } from '../docker/labels.js';
import type { ContainerHealth, ContainerState, ObservedContainer } from '../runtime.js';

/**
 * A Deployment seen as the runtime's "container". The Deployment controller's status is the
 * health check (the kubelet runs the probes):
 *
 *   being deleted                          -> removing
 *   parts missing (Secret, Service, PVC)   -> dead: the planner removes and recreates it
 *   spec.replicas 0                        -> exited (stopped; `start` scales it up)
 *   a ready replica of the current spec    -> running, healthy
 *   ReplicaFailure or progress deadline    -> running, unhealthy (the planner restarts it)
 *   otherwise                              -> running, starting (rolling out, pulling, probing)
 */
export function observeDeployment(deployment: V1Deployment, missing: readonly string[] = []): ObservedContainer {
  const meta = deployment.metadata ?? {};
  const labels = meta.labels ?? {};
  const observed: ObservedContainer = {
    id: meta.name ?? '',
    customer: labels[CUSTOMER_LABEL] ?? '',
    name: meta.name ?? '',
    specHash: labels[SPEC_HASH_LABEL],
    state: 'dead',
    health: 'unknown',
  };
  const port = Number(labels[HOST_PORT_LABEL]);
  if (Number.isInteger(port) && port > 0 && port < 65536) observed.hostPort = port;
  const { state, health, message } = stateOf(deployment, missing);
  observed.state = state;
  observed.health = health;
  if (message !== undefined) observed.healthMessage = message;
  return observed;
}

function stateOf(
  d: V1Deployment,
  missing: readonly string[],
): { state: ContainerState; health: ContainerHealth; message?: string } {
  if (d.metadata?.deletionTimestamp) return { state: 'removing', health: 'unknown', message: 'being deleted' };
  if (missing.length > 0) return { state: 'dead', health: 'unknown', message: `missing ${missing.join(', ')}` };
  const replicas = d.spec?.replicas ?? 1;
  if (replicas === 0) return { state: 'exited', health: 'unknown', message: 'scaled to 0 replicas' };
  const status = d.status ?? {};
  const current = (status.observedGeneration ?? 0) >= (d.metadata?.generation ?? 0);
  const conditions = status.conditions ?? [];
  const failure = conditions.find((c) => c.type === 'ReplicaFailure' && c.status === 'True');
  if (failure)
    return {
      state: 'running',
      health: 'unhealthy',
      message: `${failure.reason ?? 'ReplicaFailure'}: ${failure.message ?? ''}`.trim(),
    };
  const progressing = conditions.find((c) => c.type === 'Progressing');
  if (progressing?.status === 'False' && progressing.reason === 'ProgressDeadlineExceeded') {
    return { state: 'running', health: 'unhealthy', message: `progress deadline exceeded: ${progressing.message ?? ''}`.trim() };
  }
  if (current && (status.readyReplicas ?? 0) >= 1 && (status.updatedReplicas ?? status.replicas ?? 0) >= 1) {
    return { state: 'running', health: 'healthy' };
  }
  return { state: 'running', health: 'starting', message: current ? 'waiting for a ready replica' : 'rollout not observed yet' };
}
