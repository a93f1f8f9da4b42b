import { setTimeout as delay } from 'node:timers/promises';
import type { BackupGate } from '../../backup/backup-gate.js';
import { customerHost } from '../../domain/naming.js';
import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { RouteTable } from '../../proxy/route-table.js';
import { DependencyError } from '../../resilience/guard.js';
import { PortClashError, type CustomerRuntime, type ObservedContainer } from '../../runtime/runtime.js';
import { PortsExhaustedError } from '../../store/errors.js';
import type { ControllerStore, EventType, HostPorts, PortSlot } from '../../store/store.js';
import type { Workspaces } from '../../workspace/workspace.js';
import { logAction } from './action-log.js';
import type { ResolvedCustomer } from './desired.js';
import { upstreamFor, type Action, type UpstreamOf } from './plan.js';
import type { ReconcileEvents } from './reconcile-events.js';
import { restartsText, type RestartBackoff } from './restart-backoff.js';

/**
 * Execute, the third step of a reconcile: each planned action through its adapter, in order,
 * with an event for each; the first failure stops the rest (they may depend on it). The rules
 * that need memory or waiting live here too: a restart held back by its back-off, a host port
 * clash (move to another port), a container the engine keeps refusing to start (replace it),
 * and a route written only once its container answers its health check.
 */

export interface ExecutorDeps {
  store: Pick<ControllerStore, 'markDeleted'>;
  ports: HostPorts;
  runtime: CustomerRuntime;
  routes: RouteTable;
  workspaces: Workspaces;
  metrics: Metrics;
  /** One line per action on the world (action-log.ts). */
  logger: Logger;
  baseDomain: string;
  /** Restarts of unhealthy containers, spaced out like the kubelet's CrashLoopBackOff (shared with status). */
  restarts: RestartBackoff;
  /** How long one reconcile waits for a new container to turn healthy before routing to it (default 10 s). */
  healthWaitMs?: number | undefined;
  /** How long a container the route just left keeps serving before it is stopped (default ROUTE_DRAIN_MS). */
  routeDrainMs?: number | undefined;
  /** Waits `ms` or until `signal` aborts (default a timer; tests record it instead). */
  sleep?: ((ms: number, signal: AbortSignal) => Promise<void>) | undefined;
  now: () => number;
  /** The purge waits for a last backup of the folder it deletes. */
  backups?: Pick<BackupGate, 'beforePurge'> | undefined;
}

/** Why the actions stopped short of converging without failing: status shows the note. */
export interface ExecuteOutcome {
  waitNote?: string;
  /** A restart is held back by its back-off until then. */
  restartHeldUntil?: number;
}

/**
 * The customer's host ports as this reconcile knows them: as observed, then as its own port
 * actions left them (each one's answer comes from the store), so no action reads them again.
 */
export type KnownPorts = Partial<Record<PortSlot, number>>;

/** Refused starts of one container before it is replaced by a fresh one. */
const START_FAILURES_BEFORE_REPLACING = 3;
/** How often the health wait looks at the new container. */
const HEALTH_POLL_MS = 50;
/**
 * A route switch returns once Caddy runs its new configuration, but the previous one finishes
 * the requests it had already accepted, to the old upstream: stopping that container at once
 * makes them 502s (seen once in a few hundred switches on a loaded machine). Like the pause a
 * Kubernetes preStop hook gives an endpoint change to spread, this gives them time to finish.
 */
export const ROUTE_DRAIN_MS = 1500;

export class Executor {
  readonly #deps: ExecutorDeps;
  readonly #now: () => number;
  readonly #sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  readonly #restarts: RestartBackoff;
  /** Where routes point: the runtime knows (loopback for Docker, the Service on Kubernetes). */
  readonly #upstreamOf: UpstreamOf;
  /** Refused starts per container id (see #replaceIfUnstartable). */
  readonly #startFailures = new Map<string, number>();

  constructor(deps: ExecutorDeps) {
    this.#deps = deps;
    this.#now = deps.now;
    this.#sleep = deps.sleep ?? ((ms, signal) => delay(ms, undefined, { signal }));
    this.#restarts = deps.restarts;
    this.#upstreamOf = (customer, port) => deps.runtime.upstream(customer, port);
  }

  /**
   * Runs the plan's actions in order; the first failure stops the rest (they may depend on it).
   * Events go to `events`, written with the status; `ports` starts as observed and is kept up to
   * date by the port actions.
   */
  async execute(
    name: string,
    actions: Action[],
    resolved: ResolvedCustomer | undefined,
    signal: AbortSignal,
    countDrift: boolean,
    events: ReconcileEvents,
    ports: KnownPorts,
  ): Promise<ExecuteOutcome> {
    const { runtime, routes, workspaces, store, metrics } = this.#deps;
    const { ports: hostPorts } = this.#deps;
    // A restart held back by its back-off is skipped (the other actions still run); status says why.
    let heldBack: { note: string; until: number } | undefined;
    for (const action of actions) {
      if (signal.aborted) throw new Error('reconcile aborted');
      const hold = action.type === 'restartContainer' ? this.#restarts.hold(name, action.id, this.#now()) : undefined;
      if (hold) {
        // Not a correction (yet): no drift counted, no event, until the back-off lets it happen.
        const note = `unhealthy; ${restartsText(hold.restarts)}, next restart after ${new Date(hold.notBefore).toISOString()} (back-off)`;
        heldBack = { note, until: hold.notBefore };
        continue;
      }
      const drift = 'drift' in action ? action.drift : undefined;
      // Drift of a customer that had converged (or an orphan): a correction, not progress.
      const correction = drift && (countDrift || drift.startsWith('orphan_')) ? drift : undefined;
      if (correction) metrics.driftCorrections.inc({ kind: correction });
      // Every action on the world leaves an event on the customer (written with the status) and
      // one line in the log.
      const event = (type: EventType, reason: string, message: string) => {
        logAction(this.#deps.logger, { customer: name, type, reason, message, drift: correction });
        events.record(type, reason, message);
      };
      switch (action.type) {
        case 'writeWorkspace':
          await workspaces.write(name, requireResolved(resolved?.rendered));
          event('Normal', 'WorkspaceRendered', 'workspace files rendered from the template');
          break;
        case 'reservePort': {
          if (action.slot === 'next') {
            const port = (ports.next = await hostPorts.reserveNext(name));
            event('Normal', 'PortReserved', `host port ${port} reserved for the new container (blue-green update)`);
            break;
          }
          const port = (ports.current = await hostPorts.reserve(name));
          event('Normal', 'PortReserved', `host port ${port} reserved`);
          break;
        }
        case 'createContainer': {
          const next = action.slot === 'next';
          const slot = next ? 'next' : 'current';
          const port = (ports[slot] ??= next ? await hostPorts.reserveNext(name) : await hostPorts.reserve(name));
          const id = await runtime.create(requireResolved(resolved).containerSpec(port, action.slot));
          await this.#start(name, id, ports, action.slot);
          event(
            'Normal',
            'ContainerCreated',
            `${next ? 'new container created beside the serving one and started' : 'container created and started'} on ${runtime.upstream(name, port)}`,
          );
          break;
        }
        case 'startContainer': {
          await this.#start(name, action.id, ports, action.slot);
          // A container found stopped (killed, crashed, the engine restarted) is not "unhealthy".
          event(
            'Normal',
            'ContainerStarted',
            correction === 'container_stopped' ? 'container had stopped and was started again' : 'container started',
          );
          break;
        }
        case 'restartContainer': {
          // A runtime's own restart where it has one (Kubernetes: a stop and a start in quick
          // succession can merge into nothing there).
          if (runtime.restart) await runtime.restart(action.id);
          else await runtime.stop(action.id);
          this.#restarts.restarted(name, action.id, this.#now());
          if (!runtime.restart) await this.#start(name, action.id, ports, action.slot);
          event('Warning', 'ContainerRestarted', 'container was unhealthy and was restarted');
          break;
        }
        case 'stopContainer':
          await runtime.stop(action.id);
          event('Normal', 'ContainerStopped', 'container stopped');
          break;
        case 'removeContainer':
          // After a route switch the old container may still be answering a request Caddy sent
          // before: the drain and a graceful stop let it finish.
          if (action.drain) await this.#sleep(this.#deps.routeDrainMs ?? ROUTE_DRAIN_MS, signal);
          if (action.graceful) await runtime.stop(action.id);
          await runtime.remove(action.id);
          event('Normal', 'ContainerRemoved', `container removed${drift ? ` (${drift.replace('_', ' ')})` : ''}`);
          break;
        case 'ensureRoute': {
          const host = customerHost(name, this.#deps.baseDomain);
          if (action.to === 'suspendedPage') {
            await routes.ensure({ customer: name, host, target: { kind: 'suspended' } });
            event('Normal', 'RouteSuspended', `${host} shows the suspended page`);
            break;
          }
          const port = ports[action.slot ?? 'current'];
          if (port === undefined || !(await this.#waitForHealthy(name, port, signal))) {
            return {
              ...(heldBack ? { restartHeldUntil: heldBack.until } : {}),
              waitNote:
                heldBack?.note ??
                (action.slot === 'next'
                  ? 'blue-green update: waiting for the new container to become healthy; the old one serves meanwhile'
                  : 'waiting for the container to become healthy before routing to it'),
            };
          }
          const target = upstreamFor(port, name, this.#upstreamOf);
          const result = await routes.ensure({ customer: name, host, target });
          if (result !== 'unchanged') event('Normal', 'RouteReady', `${host} routes to ${target.dial}`);
          break;
        }
        case 'removeRoute':
          await routes.remove(name);
          event('Normal', 'RouteRemoved', 'route removed');
          break;
        case 'releasePort':
          if (action.slot === 'next') {
            await hostPorts.releaseNext(name);
            delete ports.next;
            event('Normal', 'PortReleased', "the blue-green update's second host port released");
            break;
          }
          await hostPorts.release(name);
          delete ports.current;
          delete ports.next;
          event('Normal', 'PortReleased', 'host port released');
          break;
        case 'promotePort': {
          const port = await hostPorts.promote(name);
          delete ports.next;
          if (port === undefined) delete ports.current;
          else ports.current = port;
          event('Normal', 'UpdateSwitched', `blue-green update done: host port ${port ?? '?'} is the customer's port now`);
          break;
        }
        case 'adoptContainer': {
          if (!runtime.adopt) break;
          let id = action.id;
          if (id === undefined) {
            const containers = await runtime.listFor(name);
            if (containers.length !== 1 || !containers[0]?.provisional) break; // the next pass sees
            id = containers[0].id;
          }
          await runtime.adopt(id, name);
          logAction(this.#deps.logger, {
            customer: name,
            type: 'Normal',
            reason: 'ContainerAdopted',
            message: `container ${id.slice(0, 12)} took the customer's container name`,
          });
          break;
        }
        case 'removeWorkspace': {
          // The last copy first: the purge waits for a backup of the folder it deletes.
          const wait = await this.#deps.backups?.beforePurge(name);
          if (wait) return { waitNote: wait };
          await workspaces.remove(name);
          event('Normal', 'WorkspacePurged', 'workspace deleted after the retention period');
          break;
        }
        case 'markDeleted':
          await store.markDeleted(name);
          logAction(this.#deps.logger, {
            customer: name,
            type: 'Normal',
            reason: 'CustomerPurged',
            message: 'teardown done: the customer is marked deleted',
          });
          // Its events went with it; so do the ones this reconcile recorded before.
          events.discard();
          break;
      }
    }
    return heldBack ? { waitNote: heldBack.note, restartHeldUntil: heldBack.until } : {};
  }

  /** Starts a container; a host port clash moves the customer to a new port (next pass recreates). */
  async #start(name: string, id: string, ports: KnownPorts, slot?: 'next'): Promise<void> {
    const port = ports[slot ?? 'current'];
    try {
      await this.#deps.runtime.start(id);
      this.#startFailures.delete(id);
    } catch (error) {
      if (!(error instanceof PortClashError)) await this.#replaceIfUnstartable(id, error);
      if (error instanceof PortClashError && port !== undefined) {
        const next = (ports[slot ?? 'current'] = await this.#deps.ports.move(name, port, slot ?? 'current'));
        await this.#repointRoute(name, port, next);
        await this.#deps.runtime.remove(id);
        throw new ReconcileStepError(`host port ${port} is taken by something else on this host; moved to ${next}`, {
          cause: error,
          reason: 'PortClash',
        });
      }
      throw error;
    }
  }

  /**
   * After a port clash moved the customer off `from`: a route still dialling `from` reaches the
   * foreign process holding it, and once that goes, whichever customer is handed the freed port
   * next. It dials the new port at once: a 502 until the new container is up beats serving
   * someone else's assistant under this customer's name.
   */
  async #repointRoute(name: string, from: number, to: number): Promise<void> {
    const { routes } = this.#deps;
    const route = (await routes.list()).find((r) => r.customer === name);
    const stale = upstreamFor(from, name, this.#upstreamOf);
    if (route?.target.kind !== 'upstream' || route.target.dial !== stale.dial) return;
    const host = customerHost(name, this.#deps.baseDomain);
    await routes.ensure({ customer: name, host, target: upstreamFor(to, name, this.#upstreamOf) });
  }

  /**
   * An engine that answers but keeps refusing to start one container (state left behind by an
   * unclean engine restart, e.g. "failed to start shim: ... file exists") never will: after
   * START_FAILURES_BEFORE_REPLACING refusals the container is removed and the next pass creates a
   * fresh one from the same spec (the workspace lives outside it, so nothing is lost), as the
   * kubelet replaces a pod sandbox. Failures while the engine is unreachable do not count.
   */
  async #replaceIfUnstartable(id: string, error: unknown): Promise<void> {
    const engineUp = await this.#deps.runtime.ping().then(
      () => true,
      () => false,
    );
    if (!engineUp) return;
    const failures = (this.#startFailures.get(id) ?? 0) + 1;
    if (failures < START_FAILURES_BEFORE_REPLACING) {
      this.#startFailures.set(id, failures);
      return;
    }
    this.#startFailures.delete(id);
    await this.#deps.runtime.remove(id);
    throw new ReconcileStepError(
      `the engine refused to start the container ${failures} times (${(error as Error).message}); removed it, a new one is created from the same spec`,
      { cause: error, reason: 'ContainerUnstartable' },
    );
  }

  async #waitForHealthy(name: string, port: number, signal: AbortSignal): Promise<boolean> {
    const deadline = this.#now() + (this.#deps.healthWaitMs ?? 10_000);
    for (;;) {
      const containers: ObservedContainer[] = await this.#deps.runtime.listFor(name);
      const container = containers.find((c) => c.hostPort === port && c.state === 'running');
      if (container?.health === 'healthy') return true;
      if (container?.health === 'unhealthy' || !container) return false;
      if (this.#now() > deadline || signal.aborted) return false;
      await new Promise((resolve) => setTimeout(resolve, HEALTH_POLL_MS));
    }
  }
}

/** A step failed; its reason goes into status and events, and the queue backs off. */
export class ReconcileStepError extends Error {
  readonly reason: string;
  constructor(message: string, options: { cause?: unknown; reason?: string } = {}) {
    super(message, { cause: options.cause });
    this.name = 'ReconcileStepError';
    this.reason = options.reason ?? 'ReconcileFailed';
  }
}

/** How a failed step shows in status and events. */
export function describeFailure(error: unknown): { reason: string; message: string; terminal: boolean } {
  if (error instanceof PortsExhaustedError) return { reason: 'PortsExhausted', message: error.message, terminal: false };
  if (error instanceof ReconcileStepError) return { reason: error.reason, message: error.message, terminal: false };
  if (error instanceof DependencyError) {
    const dependency = error.dependency.charAt(0).toUpperCase() + error.dependency.slice(1);
    return { reason: `${dependency}Failed`, message: error.message, terminal: false };
  }
  return { reason: 'ReconcileFailed', message: (error as Error).message ?? String(error), terminal: false };
}

/** What an action needs of the resolved customer (the planner plans such actions only for a resolved one). */
function requireResolved<T>(value: T | undefined): T {
  if (value === undefined) throw new Error('internal: action needs the resolved customer');
  return value;
}
