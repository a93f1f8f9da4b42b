import type { Condition, ConditionStatus, Customer, CustomerStatus, DesiredState, Phase } from '../../domain/customer.js';
import type { ObservedContainer } from '../../runtime/runtime.js';
import { routeMatches, upstreamFor, type Desired, type Observed, type UpstreamOf } from './plan.js';
import { restartsText, type RestartHold } from './restart-backoff.js';

/**
 * Status is derived, never remembered: from the world as observed after the actions ran, the
 * failure (if any) and the previous status (only to keep lastTransitionTime stable and to tell
 * Degraded from Provisioning). Pure: the time comes in as `now`.
 */
export interface StatusInput {
  name: string;
  generation: number;
  state: DesiredState;
  paused: boolean;
  desired: Desired;
  observed: Observed;
  previous: CustomerStatus;
  url: string;
  /** The action that failed and why, naming the dependency. */
  failure?: { reason: string; message: string; terminal: boolean } | undefined;
  /** Why nothing more happened now (waiting for health). */
  note?: string | undefined;
  /**
   * Why the container does not run the desired spec although the customer may be Ready: a
   * fleet rollout holds it back, rolled it back or is undone. Shown as condition UpToDate=False.
   */
  rollout?: { reason: string; message: string } | undefined;
  /** Where the route should point (the runtime's `upstream`); default 127.0.0.1:<port>. */
  upstreamOf?: UpstreamOf | undefined;
  /** The back-off holding an unhealthy container's next restart, if any. */
  restartHoldOf?: ((containerId: string) => RestartHold | undefined) | undefined;
  /** A cancelled customer's workspace is due for its purge and still there: not Terminated yet. */
  purgePending?: boolean | undefined;
  now: Date;
}

interface ConditionDraft {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
}

export function computeStatus(input: StatusInput): CustomerStatus {
  const drafts = conditionsFor(input);
  const conditions = drafts.map((d) => withTransitionTime(d, input));
  const status: CustomerStatus = {
    phase: phaseFor(input, drafts),
    observedGeneration: input.generation,
    url: input.url,
    conditions,
  };
  if (input.observed.port !== undefined) status.hostPort = input.observed.port;
  return status;
}

/**
 * The status of a customer that could not be resolved at all (a missing or invalid template):
 * the previous status with Ready=False saying why; phase Failed when no retry can help.
 */
export function failedStatus(
  customer: Pick<Customer, 'generation' | 'status'>,
  failure: { reason: string; message: string; terminal: boolean },
  now: Date,
): CustomerStatus {
  const previous = customer.status;
  return {
    ...previous,
    phase: failure.terminal ? 'Failed' : (previous.phase ?? 'Provisioning'),
    observedGeneration: customer.generation,
    conditions: [
      ...(previous.conditions ?? []).filter((c) => c.type !== 'Ready'),
      {
        type: 'Ready',
        status: 'False',
        reason: failure.reason,
        message: failure.message,
        lastTransitionTime: now.toISOString(),
        observedGeneration: customer.generation,
      },
    ],
  };
}

/** The generation had converged before: anything found wrong now is drift, not progress. */
export function isConverged(customer: Pick<Customer, 'generation' | 'status'>): boolean {
  const { status } = customer;
  return status.observedGeneration === customer.generation && (status.phase === 'Ready' || status.phase === 'Suspended');
}

/** A customer without a model key of its own where included model access is not offered. */
const NO_MODEL_CONDITION: ConditionDraft = {
  type: 'ModelReady',
  status: 'False',
  reason: 'NoModelAccess',
  message:
    'the assistant has no AI model: it has no model key of its own and this server does not offer included model access (operators: docs/deploy.md, "Model gateway")',
};

function conditionsFor(input: StatusInput): ConditionDraft[] {
  const { desired, observed, failure } = input;
  const workspaceCurrent = observed.workspace.exists && observed.workspace.contentHash === desired.workspaceHash;
  const container = observed.containers.find((c) => c.specHash === desired.specHash && c.hostPort === observed.port);
  const drafts: ConditionDraft[] = [];

  if (input.state === 'pending' || input.state === 'cancelled') {
    const reason = input.state === 'pending' ? 'AwaitingPayment' : 'Cancelled';
    const message =
      input.state === 'pending' ? 'waiting for the checkout to complete' : 'the customer was cancelled; nothing runs';
    for (const type of ['WorkspaceReady', 'ContainerReady', 'RouteReady', 'Ready'])
      drafts.push({ type, status: 'False', reason, message });
  } else if (input.state === 'suspended') {
    const stopped = observed.containers.every((c) => c.state !== 'running' && c.state !== 'restarting');
    const pageUp = observed.route !== undefined && routeMatches(observed.route, desired.host, { kind: 'suspended' });
    drafts.push(
      {
        type: 'WorkspaceReady',
        status: observed.workspace.exists ? 'True' : 'False',
        reason: observed.workspace.exists ? 'Rendered' : 'Missing',
        message: '',
      },
      {
        type: 'ContainerReady',
        status: 'False',
        reason: stopped ? 'Suspended' : 'Stopping',
        message: stopped ? 'the assistant is stopped while suspended' : 'stopping the assistant',
      },
      {
        type: 'RouteReady',
        status: pageUp ? 'True' : 'False',
        reason: pageUp ? 'SuspendedPage' : 'RouteNotReady',
        message: pageUp ? 'the host shows the suspended page' : '',
      },
      { type: 'Ready', status: 'False', reason: 'Suspended', message: 'the customer is suspended' },
    );
  } else {
    const workspace: ConditionDraft = workspaceCurrent
      ? { type: 'WorkspaceReady', status: 'True', reason: 'Rendered', message: '' }
      : {
          type: 'WorkspaceReady',
          status: 'False',
          reason: observed.workspace.exists ? 'Stale' : 'Missing',
          message: 'the workspace is being rendered',
        };
    let containerCondition: ConditionDraft;
    const switching = !container && switchingTo(input);
    if (switching) {
      containerCondition = {
        type: 'ContainerReady',
        status: 'False',
        reason: 'SwitchingOver',
        message:
          switching.health === 'unhealthy'
            ? `blue-green update: the new container is unhealthy (${switching.healthMessage ?? 'health check fails'}); the old one serves`
            : 'blue-green update: the new container starts beside the old one, which serves until the route switches',
      };
    } else if (!container)
      containerCondition = {
        type: 'ContainerReady',
        status: 'False',
        reason: 'ContainerMissing',
        message: 'the container is being created',
      };
    else if (container.state !== 'running')
      containerCondition = {
        type: 'ContainerReady',
        status: 'False',
        reason: 'ContainerNotRunning',
        message: notRunningMessage(container),
      };
    else if (container.health === 'healthy')
      containerCondition = { type: 'ContainerReady', status: 'True', reason: 'Healthy', message: '' };
    else if (container.health === 'unhealthy')
      containerCondition = unhealthyCondition(container, input.restartHoldOf?.(container.id));
    else if (container.health === 'unready')
      // Alive and started, but its readiness probe fails (e.g. a channel it cannot reach): kept
      // and not restarted, since a restart does not fix what it waits for.
      containerCondition = {
        type: 'ContainerReady',
        status: 'False',
        reason: 'NotReady',
        message: container.healthMessage ?? 'the assistant is running but not ready',
      };
    else
      containerCondition = {
        type: 'ContainerReady',
        status: 'False',
        reason: 'Starting',
        message: container.healthMessage
          ? `waiting for the assistant to start (${container.healthMessage})`
          : 'waiting for the assistant to answer its health check',
      };
    const routeOk =
      observed.route !== undefined &&
      observed.port !== undefined &&
      routeMatches(observed.route, desired.host, upstreamFor(observed.port, desired.name, input.upstreamOf));
    const route: ConditionDraft = routeOk
      ? { type: 'RouteReady', status: 'True', reason: 'Routed', message: '' }
      : {
          type: 'RouteReady',
          status: 'False',
          reason: observed.route ? 'RouteWrong' : 'RouteMissing',
          message: input.note ?? 'the route is being set up',
        };
    drafts.push(workspace, containerCondition, route);
    const notReady = drafts.find((d) => d.status !== 'True');
    drafts.push(
      notReady
        ? { type: 'Ready', status: 'False', reason: notReady.reason, message: notReady.message }
        : { type: 'Ready', status: 'True', reason: 'AllReady', message: '' },
    );
  }

  if (failure) {
    // The failure explains the Ready condition: which dependency failed and how.
    const ready = drafts.find((d) => d.type === 'Ready');
    if (ready) Object.assign(ready, { status: 'False', reason: failure.reason, message: failure.message });
  }
  if (input.rollout && input.state === 'active' && !input.paused) {
    drafts.push({ type: 'UpToDate', status: 'False', reason: input.rollout.reason, message: input.rollout.message });
  }
  if (input.desired.modelSource === 'none' && input.state === 'active' && !input.paused) {
    // Not part of Ready (the assistant runs and is reachable), but it cannot answer a message.
    drafts.push(NO_MODEL_CONDITION);
  }
  if (input.paused)
    drafts.push({
      type: 'Paused',
      status: 'True',
      reason: 'Paused',
      message: 'spec.paused is true: the controller leaves this customer alone',
    });
  return drafts;
}

/**
 * A container that is not running says so in the engine's own words when it has them ("Exited
 * (137) 3 seconds ago" after a kill): stopped is not unhealthy, and the exit code tells why.
 */
function notRunningMessage(container: ObservedContainer): string {
  const state = container.state === 'exited' ? 'has stopped' : `is ${container.state}`;
  // Without "3 seconds ago": the message must not change from pass to pass (each change is a status write).
  const engine = container.healthMessage?.replace(/\s+(?:About an?|Less than an?|an?|\d+)\s+\w+\s+ago$/i, '');
  const why = engine && engine.toLowerCase() !== container.state ? ` (${engine})` : '';
  return `the container ${state}${why}`;
}

/** An unhealthy container, restarted now or waiting out its restart back-off. */
function unhealthyCondition(container: ObservedContainer, hold: RestartHold | undefined): ConditionDraft {
  const health = container.healthMessage ?? 'the health check fails';
  if (!hold) return { type: 'ContainerReady', status: 'False', reason: 'Unhealthy', message: health };
  // An absolute time, not "in 40s": the message stays the same from pass to pass (no status write).
  const message = `${health}; ${restartsText(hold.restarts)}, next restart after ${new Date(hold.notBefore).toISOString()}`;
  return { type: 'ContainerReady', status: 'False', reason: 'RestartBackOff', message };
}

/** A blue-green update in progress: the new container, on the next port. */
function switchingTo(input: StatusInput) {
  const { observed, desired } = input;
  if (observed.nextPort === undefined) return undefined;
  return observed.containers.find((c) => c.specHash === desired.specHash && c.hostPort === observed.nextPort);
}

function phaseFor(input: StatusInput, drafts: ConditionDraft[]): Phase {
  const ready = drafts.find((d) => d.type === 'Ready')?.status === 'True';
  if (input.failure?.terminal) return 'Failed';
  switch (input.state) {
    case 'pending':
      return 'Pending';
    case 'cancelled': {
      const { observed } = input;
      const left = observed.route || observed.containers.length > 0 || observed.port !== undefined || input.purgePending;
      return left ? 'Terminating' : 'Terminated';
    }
    case 'suspended':
      return drafts.find((d) => d.type === 'ContainerReady')?.reason === 'Suspended' ? 'Suspended' : 'Degraded';
    case 'active': {
      if (ready) return 'Ready';
      // A blue-green update is under way and the old container still serves: not degraded.
      if (drafts.find((d) => d.type === 'ContainerReady')?.reason === 'SwitchingOver' && !input.failure) return 'Provisioning';
      const previous = input.previous;
      const sameGeneration = previous.observedGeneration === input.generation;
      // At the same generation a customer that was up and is not any more has degraded; a new
      // generation (a spec change being applied) or a first start is still provisioning.
      if (sameGeneration && (previous.phase === 'Ready' || previous.phase === 'Degraded')) return 'Degraded';
      return 'Provisioning';
    }
  }
}

function withTransitionTime(draft: ConditionDraft, input: StatusInput): Condition {
  const previous = input.previous.conditions?.find((c) => c.type === draft.type);
  const lastTransitionTime = previous && previous.status === draft.status ? previous.lastTransitionTime : input.now.toISOString();
  return { ...draft, lastTransitionTime, observedGeneration: input.generation };
}
