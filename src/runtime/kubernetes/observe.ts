import type { V1Deployment, V1Pod } from '@kubernetes/client-node';
import { CUSTOMER_LABEL, SPEC_HASH_LABEL } from '../../domain/naming.js';
import { HOST_PORT_LABEL, OWN_HASH_LABEL } from '../../domain/labels.js';
import type { ContainerHealth, ContainerState, ObservedContainer } from '../runtime.js';

/** On the pod template, written by `restart`: a new template, so a new pod (like `kubectl rollout restart`). */
export const RESTARTED_AT_ANNOTATION = 'cloud.blytz/restarted-at';

/** Stamped on the Deployment by `start`: when we last scaled it up. */
export const STARTED_AT_ANNOTATION = 'cloud.blytz/started-at';

/**
 * A failure condition within this long of our own start is a start still settling, not a reason
 * to restart again (Docker's starting grace, likewise 30 s). Without it a Deployment whose pods
 * cannot be created (quota, admission) would be restarted as fast as the API answers.
 */
export const START_GRACE_MS = 30_000;

/**
 * A Deployment seen as the runtime's "container". The Deployment controller's status is the
 * health check (the kubelet runs the probes):
 *
 *   being deleted                          -> removing
 *   parts missing (Service, PVC, policy)   -> dead: the planner removes and recreates it
 *   spec.replicas 0                        -> exited (stopped; `start` scales it up)
 *   status not of the current generation   -> running, starting (conditions may be stale)
 *   ReplicaFailure or progress deadline,   -> running, unhealthy (the planner restarts it), or
 *   or a pod crash-looping                    starting within START_GRACE_MS of our start
 *   a ready replica of the current spec    -> running, healthy
 *   otherwise                              -> running, starting (rolling out, pulling, probing)
 */
export function observeDeployment(
  deployment: V1Deployment,
  missing: readonly string[] = [],
  now = Date.now(),
  pods: readonly V1Pod[] = [],
): ObservedContainer {
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
  if (labels[OWN_HASH_LABEL] !== undefined) observed.ownHash = labels[OWN_HASH_LABEL];
  const port = Number(labels[HOST_PORT_LABEL]);
  if (Number.isInteger(port) && port > 0 && port < 65536) observed.hostPort = port;
  const { state, health, message } = stateOf(deployment, missing, now, pods);
  observed.state = state;
  observed.health = health;
  if (message !== undefined) observed.healthMessage = message;
  return observed;
}

function stateOf(
  d: V1Deployment,
  missing: readonly string[],
  now: number,
  pods: readonly V1Pod[],
): { state: ContainerState; health: ContainerHealth; message?: string } {
  if (d.metadata?.deletionTimestamp) return { state: 'removing', health: 'unknown', message: 'being deleted' };
  if (missing.length > 0) return { state: 'dead', health: 'unknown', message: `missing ${missing.join(', ')}` };
  const replicas = d.spec?.replicas ?? 1;
  if (replicas === 0) return { state: 'exited', health: 'unknown', message: 'scaled to 0 replicas' };
  const status = d.status ?? {};
  // Conditions written for an older generation say nothing about the current spec.
  if ((status.observedGeneration ?? 0) < (d.metadata?.generation ?? 0)) {
    return { state: 'running', health: 'starting', message: 'rollout not observed yet' };
  }
  const conditions = status.conditions ?? [];
  const failure = conditions.find((c) => c.type === 'ReplicaFailure' && c.status === 'True');
  const progressing = conditions.find((c) => c.type === 'Progressing');
  const problem = failure
    ? `${failure.reason ?? 'ReplicaFailure'}: ${failure.message ?? ''}`.trim()
    : progressing?.status === 'False' && progressing.reason === 'ProgressDeadlineExceeded'
      ? `progress deadline exceeded: ${progressing.message ?? ''}`.trim()
      : crashLoopOf(pods);
  if (problem !== undefined) {
    const startedAt = Date.parse(d.metadata?.annotations?.[STARTED_AT_ANNOTATION] ?? '');
    const settling = Number.isFinite(startedAt) && now - startedAt < START_GRACE_MS;
    return {
      state: 'running',
      health: settling ? 'starting' : 'unhealthy',
      message: settling ? `started moments ago; ${problem}` : problem,
    };
  }
  if ((status.readyReplicas ?? 0) >= 1 && (status.updatedReplicas ?? status.replicas ?? 0) >= 1) {
    return { state: 'running', health: 'healthy' };
  }
  return { state: 'running', health: 'starting', message: 'waiting for a ready replica' };
}

/**
 * A container of the Deployment's pods that keeps exiting: the kubelet restarts it with growing
 * delays (CrashLoopBackOff) while the Deployment's conditions still say its rollout succeeded.
 */
function crashLoopOf(pods: readonly V1Pod[]): string | undefined {
  for (const pod of pods) {
    if (pod.metadata?.deletionTimestamp) continue;
    for (const c of pod.status?.containerStatuses ?? []) {
      const waiting = c.state?.waiting?.reason;
      const exited = c.lastState?.terminated;
      if (waiting === 'CrashLoopBackOff' || (c.restartCount > 0 && !c.ready && exited)) {
        const code =
          exited?.exitCode !== undefined ? ` with code ${exited.exitCode}${exited.reason ? ` (${exited.reason})` : ''}` : '';
        return `crash-looping: container ${c.name} exited${code}, restarted ${c.restartCount} time(s)`;
      }
    }
  }
  return undefined;
}
