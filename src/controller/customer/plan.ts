import type { DesiredState } from '../../domain/customer.js';
import type { ObservedContainer } from '../../runtime/runtime.js';
import { sameTarget, type ObservedRoute, type RouteTarget } from '../../proxy/route-table.js';

/**
 * The customer planner: a pure function from what is wanted and what is there to the ordered,
 * idempotent actions that close the gap. No I/O, no clock (the time comes in as `now`), no
 * randomness: the same input always gives the same plan, so a crash, a duplicate event or a
 * lost event costs nothing. Planning on a converged world gives no actions.
 */

/** The desired side, already resolved by the reconciler (hashes computed from spec + template). */
export interface Desired {
  name: string;
  generation: number;
  state: DesiredState;
  paused: boolean;
  /** When the customer was cancelled (ms since epoch), for the workspace purge. */
  cancelledAtMs: number | null;
  /** Hash the container must carry (image, resources, ports, mounts, rendered config). */
  specHash: string;
  /** Hash of the rendered workspace files. */
  workspaceHash: string;
  host: string;
  /**
   * Hash of the customer's own inputs in specHash (plan, template, secrets). A container whose
   * spec hash differs but whose own hash is the same is outdated by a fleet-wide change (image,
   * template manifest, plan limits): a rollout decides when it may be recreated.
   */
  ownHash?: string;
  /**
   * How a new container replaces the old one: `recreate` (default: stop, then start) or
   * `blueGreen` (start the new one beside it on a second port, switch the route, then remove the
   * old one). Blue-green needs a runtime that runs two side by side (`PlanInput.sideBySide`).
   */
  updateStrategy?: 'recreate' | 'blueGreen';
  /**
   * Where the assistant's model comes from: the customer's own key, included access through the
   * model gateway, or `none` (no key of its own and included access not offered): it cannot answer.
   */
  modelSource?: 'own-key' | 'included' | 'none';
}

export interface Observed {
  workspace: { exists: boolean; contentHash?: string | undefined };
  /** Host port reserved for the customer in the store. */
  port: number | undefined;
  /** The second host port a blue-green update holds for its new container (slot `next`). */
  nextPort?: number | undefined;
  /** Managed containers labelled with this customer (normally zero or one). */
  containers: ObservedContainer[];
  route: ObservedRoute | undefined;
}

export interface PlanInput {
  /** Undefined when no customer is stored under this name: everything observed is an orphan. */
  desired: Desired | undefined;
  observed: Observed;
  now: number;
  retentionMs: number;
  /**
   * Whether a container outdated by a fleet-wide change (see `fleetChangeOf`) may be recreated
   * now; the rollout decides. Default true. When false the outdated container is kept, started,
   * restarted and routed to as if it were current, and the plan says `waitingForRollout`.
   */
  recreateAllowed?: boolean;
  /** Where a customer's route points on its reserved port (the runtime's `upstream`); default 127.0.0.1:<port>. */
  upstreamOf?: UpstreamOf;
  /**
   * The runtime can run a customer's new container beside the old one on a second port (Docker).
   * Only then are `blueGreen` templates updated blue-green; otherwise like `recreate`. Default false.
   */
  sideBySide?: boolean;
  /**
   * The runtime replaces what a container runs in place, by its own update strategy (Kubernetes:
   * the Deployment is written and its controller recreates the pod; the Service and volume stay).
   * Then an outdated or broken container is updated by `createContainer` rather than removed and
   * made anew, which would run the old pod (terminating) beside the new one and give the Service
   * a new address. Default false.
   */
  updatesInPlace?: boolean;
  /**
   * The runtime's remove returns before the container is gone (Kubernetes: the Deployment is
   * deleted in the foreground and stays until its pods have stopped). Then a cancelled customer's
   * workspace and record are purged only in a later pass that sees no container left. Default
   * false: removed containers are gone when remove returns, and the purge follows in the same pass.
   */
  removesInBackground?: boolean;
}

export type DriftKind =
  | 'workspace_stale'
  | 'port_missing'
  | 'container_missing'
  | 'container_stopped'
  | 'container_outdated'
  | 'container_unhealthy'
  | 'container_duplicate'
  | 'orphan_container'
  | 'route_missing'
  | 'route_wrong'
  | 'orphan_route'
  | 'orphan_port'
  /** A `next` port held with no blue-green update in progress (it finished, or was abandoned). */
  | 'next_port_leftover';

/**
 * `drift` names what the planner found wrong. Whether it counts as drift (the world moved away
 * from a converged state) or as ordinary progress (first provisioning, a spec change) is decided
 * by the executor, which knows whether this generation had converged before.
 */
export type Action =
  | { type: 'writeWorkspace'; drift: DriftKind }
  /** `slot: 'next'`: the second port of a blue-green update (default: the customer's port). */
  | { type: 'reservePort'; drift: DriftKind; slot?: 'next' }
  /**
   * Create and start the desired container on the reserved port (`slot: 'next'`: a blue-green
   * update's new container, on the next port, beside the serving one).
   */
  | { type: 'createContainer'; drift: DriftKind; slot?: 'next' }
  | { type: 'startContainer'; id: string; drift: DriftKind; slot?: 'next' }
  | { type: 'restartContainer'; id: string; drift: DriftKind; slot?: 'next' }
  | { type: 'stopContainer'; id: string }
  /**
   * `graceful`: stop it first (requests in flight finish). `drain`: the route pointed at it until
   * a moment ago (a blue-green switch, or one sent back): the proxy's previous configuration may
   * still hand it requests it accepted before the switch, so those get time to finish first.
   */
  | { type: 'removeContainer'; id: string; drift: DriftKind | undefined; graceful?: true; drain?: true }
  /**
   * Point the route at the customer's container (on its reserved port, resolved when executed:
   * the port may be reserved by an earlier action of the same plan) or at the suspended page.
   * Before routing to the container the executor waits, bounded, for it to be running and
   * healthy: users never hit a dead upstream.
   */
  | { type: 'ensureRoute'; to: 'container' | 'suspendedPage'; drift: DriftKind; slot?: 'next' }
  | { type: 'removeRoute'; drift: DriftKind | undefined }
  /** Releases the customer's ports (both slots), or with `slot: 'next'` only the next one. */
  | { type: 'releasePort'; drift: DriftKind | undefined; slot?: 'next' }
  /** A blue-green update is through: the next port becomes the customer's port, the old one is released. */
  | { type: 'promotePort' }
  /**
   * A blue-green update's container, now the customer's only one, takes the customer's own
   * container name (`blytz-<name>`). Without an id: the customer's provisional container.
   */
  | { type: 'adoptContainer'; id?: string }
  | { type: 'removeWorkspace' }
  /** The purge is complete: the customer's name may be used again. */
  | { type: 'markDeleted' };

export interface Plan {
  actions: Action[];
  /** Why nothing more can happen now (waiting for health, paused), for status. */
  note?: string;
  /** A fleet-wide change is held back: this is the hash of the container kept meanwhile. */
  waitingForRollout?: { heldHash: string };
}

/**
 * The `host:port` a customer's route dials for its reserved port. It comes from the runtime
 * (`CustomerRuntime.upstream`): containers on this host answer on 127.0.0.1, Kubernetes
 * customers behind their Service's cluster DNS name. Must be pure.
 */
export type UpstreamOf = (customer: string, port: number) => string;

/** The Docker runtime's answer: the port published on the host's loopback. */
export const loopbackUpstream: UpstreamOf = (_customer, port) => `127.0.0.1:${port}`;

/** The route target of `customer` on `port`, as `upstreamOf` says (default: loopback). */
export function upstreamFor(
  port: number,
  customer = '',
  upstreamOf: UpstreamOf = loopbackUpstream,
): Extract<RouteTarget, { kind: 'upstream' }> {
  return { kind: 'upstream', dial: upstreamOf(customer, port) };
}

export function plan(input: PlanInput): Plan {
  const { desired, observed } = input;
  const upstreamOf = input.upstreamOf ?? loopbackUpstream;
  if (!desired) return planOrphan(observed);
  if (desired.paused) return { actions: [], note: 'paused: the controller leaves this customer alone' };
  switch (desired.state) {
    case 'active': {
      const held = input.recreateAllowed === false ? fleetChangeOf(desired, observed) : undefined;
      if (!held) {
        const blueGreen = input.sideBySide === true && desired.updateStrategy === 'blueGreen';
        return (
          (blueGreen ? planBlueGreen(desired, observed, upstreamOf) : undefined) ??
          planActive(desired, observed, upstreamOf, undefined, input.updatesInPlace === true)
        );
      }
      // Plan as if the kept container's hash were the desired one: it stays up, is started,
      // restarted and routed to like a current container until the rollout lets it go.
      const result = planActive(
        { ...desired, specHash: held.specHash as string },
        observed,
        upstreamOf,
        held.id,
        input.updatesInPlace === true,
      );
      return { ...result, note: 'waiting for the fleet rollout', waitingForRollout: { heldHash: held.specHash as string } };
    }
    case 'suspended':
      return planSuspended(desired, observed);
    case 'pending':
      return { actions: teardown(observed, false) };
    case 'cancelled':
      return planCancelled(desired, input);
  }
}

/**
 * The container a fleet-wide change would replace, when there is one: the customer is active,
 * no usable container carries the desired hash, and a container on the reserved port that is
 * not dead carries another spec hash but the same own hash (or none: made before own hashes
 * existed). A change of the customer's own inputs is never a fleet change. Stopped containers
 * count too (a customer resumed, or every container after an engine restart): recreating them
 * outside the rollout would skip its limit, its image check and its rollback, and a held one is
 * simply started again on its old hash.
 */
export function fleetChangeOf(desired: Desired | undefined, observed: Observed): ObservedContainer | undefined {
  if (!desired || desired.paused || desired.state !== 'active' || observed.port === undefined) return undefined;
  const sorted = sortContainers(observed.containers);
  const current = sorted.some(
    (c) => c.specHash === desired.specHash && c.hostPort === observed.port && c.state !== 'dead' && c.state !== 'removing',
  );
  if (current) return undefined;
  return sorted.find(
    (c) =>
      c.specHash !== undefined &&
      c.specHash !== desired.specHash &&
      c.hostPort === observed.port &&
      c.state !== 'dead' &&
      c.state !== 'removing' &&
      (c.ownHash === undefined || desired.ownHash === undefined || c.ownHash === desired.ownHash),
  );
}

/** `keepId`: the container a held fleet change keeps; of duplicates it is the one that stays. */
function planActive(desired: Desired, observed: Observed, upstreamOf: UpstreamOf, keepId?: string, updatesInPlace = false): Plan {
  const actions: Action[] = [];
  if (observed.workspace.contentHash !== desired.workspaceHash || !observed.workspace.exists) {
    actions.push({ type: 'writeWorkspace', drift: 'workspace_stale' });
  }
  if (observed.port === undefined) actions.push({ type: 'reservePort', drift: 'port_missing' });

  const picked = pickContainer(observed.containers, desired.specHash, observed.port, keepId);
  const { keep } = picked;
  // In place: the first outdated or broken one (not being deleted) is updated rather than removed.
  const updated = !keep && updatesInPlace ? picked.remove.find((r) => r.container.state !== 'removing') : undefined;
  const remove = picked.remove.filter((r) => r !== updated);
  // A blue-green switch abandoned after its route switch (a rollout held it back or sent it
  // back): the route returns to the kept, running container before the new one is removed.
  const routeBack =
    keep?.state === 'running' &&
    observed.port !== undefined &&
    observed.nextPort !== undefined &&
    observed.route !== undefined &&
    routeMatches(observed.route, desired.host, upstreamFor(observed.nextPort, desired.name, upstreamOf));
  if (routeBack) actions.push({ type: 'ensureRoute', to: 'container', drift: 'route_wrong' });
  // Outdated and duplicate containers go before the new one starts: they may hold the port.
  for (const { container, drift } of remove) {
    // The one the route is taken back from may still be answering requests sent to it.
    actions.push(removal(container, drift, routeBack && container.hostPort === observed.nextPort));
  }
  // A blue-green update's second port with no update in progress (finished, abandoned, held
  // back by a rollout): its container, if any, was just removed, so the port may go.
  if (observed.nextPort !== undefined) actions.push({ type: 'releasePort', slot: 'next', drift: 'next_port_leftover' });
  // The container of a finished blue-green update, now alone, takes the customer's own name.
  if (keep?.provisional) actions.push({ type: 'adoptContainer', id: keep.id });
  if (!keep) {
    actions.push({ type: 'createContainer', drift: updated ? 'container_outdated' : 'container_missing' });
  } else if ((keep.state === 'running' || keep.state === 'restarting') && keep.health === 'unhealthy') {
    actions.push({ type: 'restartContainer', id: keep.id, drift: 'container_unhealthy' });
  } else if (keep.state !== 'running' && keep.state !== 'restarting') {
    actions.push({ type: 'startContainer', id: keep.id, drift: 'container_stopped' });
  }

  if (routeBack) {
    // already planned above
  } else if (!observed.route) {
    actions.push({ type: 'ensureRoute', to: 'container', drift: 'route_missing' });
  } else if (
    observed.port === undefined ||
    !routeMatches(observed.route, desired.host, upstreamFor(observed.port, desired.name, upstreamOf))
  ) {
    actions.push({ type: 'ensureRoute', to: 'container', drift: 'route_wrong' });
  }
  return { actions };
}

/**
 * A blue-green update (template `updateStrategy: blueGreen`, on a runtime that runs two
 * containers side by side): the new container starts on the customer's `next` port beside the
 * one serving on its port; once it is healthy the route switches to it, then the old one goes and
 * the next port becomes the customer's port. Every step is planned from what is observed, so a
 * controller killed between any two resumes at the right one:
 *
 * | observed                                              | plan                                             |
 * |-------------------------------------------------------|--------------------------------------------------|
 * | old on port, no next port                             | reserve next, create new, route to it, remove old, promote |
 * | old on port, new starting on next                     | (start) route to new (waits for health), remove old, promote |
 * | route on next, old still there                        | remove old, promote                              |
 * | route on next, old gone, port not yet promoted        | promote                                          |
 * | new on port (promoted), leftover next / provisional name | (planActive) release next, adopt the name        |
 *
 * The old container is removed only after the route points at the new one, which the executor
 * writes only once the new one is healthy: the old one serves until then. Returns undefined when
 * this is no blue-green update (no port yet, the current container already on the port, or
 * nothing serving whose place to take): planActive then does what recreate would (and tidies
 * up a leftover next port and a provisional name).
 */
function planBlueGreen(desired: Desired, observed: Observed, upstreamOf: UpstreamOf): Plan | undefined {
  const port = observed.port;
  const next = observed.nextPort;
  if (port === undefined) return undefined;
  const live = (c: ObservedContainer) => c.state !== 'dead' && c.state !== 'removing';
  const sorted = sortContainers(observed.containers);
  if (sorted.some((c) => c.specHash === desired.specHash && c.hostPort === port && live(c))) return undefined;
  const fresh =
    next === undefined ? undefined : sorted.find((c) => c.specHash === desired.specHash && c.hostPort === next && live(c));
  const old = sorted.find((c) => c.hostPort === port && (c.state === 'running' || c.state === 'restarting'));
  if (!fresh && !old) return undefined;

  const actions: Action[] = [];
  if (observed.workspace.contentHash !== desired.workspaceHash || !observed.workspace.exists) {
    actions.push({ type: 'writeWorkspace', drift: 'workspace_stale' });
  }
  // Anything but the serving container and the new one: duplicates, earlier attempts' containers.
  for (const container of sorted) {
    if (container === old || container === fresh) continue;
    const duplicate = container.specHash === desired.specHash && live(container);
    actions.push({ type: 'removeContainer', id: container.id, drift: duplicate ? 'container_duplicate' : 'container_outdated' });
  }
  const routedTo = (p: number) =>
    observed.route !== undefined && routeMatches(observed.route, desired.host, upstreamFor(p, desired.name, upstreamOf));
  const routedNew = fresh !== undefined && next !== undefined && routedTo(next);
  if (old && old.health !== 'unhealthy' && !routedNew && !routedTo(port)) {
    // The old container serves until the new one is healthy: the route goes (back) to it first.
    actions.push({ type: 'ensureRoute', to: 'container', drift: observed.route ? 'route_wrong' : 'route_missing' });
  }
  // A container of an earlier update still under the provisional name would block the new one's.
  if (old?.provisional && !fresh) actions.push({ type: 'adoptContainer', id: old.id });
  if (next === undefined) actions.push({ type: 'reservePort', slot: 'next', drift: 'port_missing' });
  if (!fresh) {
    actions.push({ type: 'createContainer', slot: 'next', drift: 'container_missing' });
  } else if ((fresh.state === 'running' || fresh.state === 'restarting') && fresh.health === 'unhealthy') {
    actions.push({ type: 'restartContainer', id: fresh.id, slot: 'next', drift: 'container_unhealthy' });
  } else if (fresh.state !== 'running' && fresh.state !== 'restarting') {
    actions.push({ type: 'startContainer', id: fresh.id, slot: 'next', drift: 'container_stopped' });
  }
  // The executor routes only to a healthy container; until then it stops here and the old one serves.
  if (!routedNew) actions.push({ type: 'ensureRoute', to: 'container', slot: 'next', drift: 'route_wrong' });
  if (old) actions.push({ type: 'removeContainer', id: old.id, drift: 'container_outdated', graceful: true, drain: true });
  actions.push({ type: 'promotePort' });
  actions.push(fresh ? { type: 'adoptContainer', id: fresh.id } : { type: 'adoptContainer' });
  return { actions, note: 'blue-green update: the new container starts beside the serving one' };
}

function planSuspended(desired: Desired, observed: Observed): Plan {
  const actions: Action[] = [];
  // The workspace is kept current while suspended, so resuming needs no extra step.
  if (observed.workspace.exists && observed.workspace.contentHash !== desired.workspaceHash) {
    actions.push({ type: 'writeWorkspace', drift: 'workspace_stale' });
  }
  if (!observed.route) {
    actions.push({ type: 'ensureRoute', to: 'suspendedPage', drift: 'route_missing' });
  } else if (!routeMatches(observed.route, desired.host, { kind: 'suspended' })) {
    // The page goes up before the container goes down: users see why, never a dead upstream.
    actions.push({ type: 'ensureRoute', to: 'suspendedPage', drift: 'route_wrong' });
  }
  const [first, ...duplicates] = sortContainers(observed.containers);
  for (const container of duplicates) actions.push({ type: 'removeContainer', id: container.id, drift: 'container_duplicate' });
  if (first && (first.state === 'running' || first.state === 'restarting' || first.state === 'paused')) {
    actions.push({ type: 'stopContainer', id: first.id });
  }
  return { actions };
}

function planCancelled(desired: Desired, input: PlanInput): Plan {
  const actions = teardown(input.observed, false);
  const purgeAt = (desired.cancelledAtMs ?? input.now) + input.retentionMs;
  // The purge (and the customer's deletion) only once the last container is gone: the workspace
  // and the record must outlive the last process that uses them, and a runtime that removes in
  // the background (or a container already being removed) is not done when remove returns.
  const containers = input.observed.containers;
  const removedThisPass = !input.removesInBackground && containers.every((c) => c.state !== 'removing');
  if (input.now >= purgeAt && (containers.length === 0 || removedThisPass)) {
    if (input.observed.workspace.exists) actions.push({ type: 'removeWorkspace' });
    actions.push({ type: 'markDeleted' });
  }
  return { actions };
}

/**
 * Removing one of the customer's own assistants (replaced by a new spec, or torn down on cancel)
 * stops it gracefully first: it drains, and releases what it holds in its state folder. A
 * duplicate, or a container we did not make (no spec hash), is removed at once: it may ignore
 * SIGTERM, and nothing of the customer's depends on it shutting down cleanly.
 */
function removal(container: ObservedContainer, drift: DriftKind | undefined, drain = false): Action {
  const own = container.specHash !== undefined && (container.state === 'running' || container.state === 'restarting');
  const graceful = own && (drift === undefined || drift === 'container_outdated');
  return {
    type: 'removeContainer',
    id: container.id,
    drift,
    ...(graceful ? { graceful: true as const } : {}),
    ...(drain ? { drain: true as const } : {}),
  };
}

function planOrphan(observed: Observed): Plan {
  return { actions: teardown(observed, true) };
}

/** Route first, then containers, then the port: users never hit a dead upstream. */
function teardown(observed: Observed, orphan: boolean): Action[] {
  const actions: Action[] = [];
  if (observed.route) actions.push({ type: 'removeRoute', drift: orphan ? 'orphan_route' : undefined });
  for (const container of sortContainers(observed.containers)) {
    actions.push(orphan ? { type: 'removeContainer', id: container.id, drift: 'orphan_container' } : removal(container, undefined));
  }
  if (observed.port !== undefined) actions.push({ type: 'releasePort', drift: orphan ? 'orphan_port' : undefined });
  return actions;
}

export function routeMatches(route: ObservedRoute, host: string, target: RouteTarget): boolean {
  return route.hosts.length === 1 && route.hosts[0] === host && sameTarget(route.target, target);
}

/**
 * Of the customer's containers, the one to keep: carrying the desired hash, on the reserved port,
 * `preferId` first, then running preferred. Every other one is removed (outdated or a duplicate).
 */
function pickContainer(
  containers: ObservedContainer[],
  specHash: string,
  port: number | undefined,
  preferId?: string,
): { keep: ObservedContainer | undefined; remove: Array<{ container: ObservedContainer; drift: DriftKind }> } {
  const usable = (c: ObservedContainer) =>
    c.specHash === specHash && port !== undefined && c.hostPort === port && c.state !== 'dead' && c.state !== 'removing';
  const sorted = sortContainers(containers);
  const keep = sorted.find((c) => c.id === preferId && usable(c)) ?? sorted.find(usable);
  const remove = sorted
    .filter((c) => c !== keep)
    .map((container) => ({ container, drift: (usable(container) ? 'container_duplicate' : 'container_outdated') as DriftKind }));
  return { keep, remove };
}

const STATE_RANK: Record<ObservedContainer['state'], number> = {
  running: 0,
  restarting: 1,
  paused: 2,
  created: 3,
  exited: 4,
  removing: 5,
  dead: 6,
};

/** Deterministic order: running first, then by id (plans must not depend on list order). */
function sortContainers(containers: ObservedContainer[]): ObservedContainer[] {
  return [...containers].sort((a, b) => STATE_RANK[a.state] - STATE_RANK[b.state] || a.id.localeCompare(b.id));
}
