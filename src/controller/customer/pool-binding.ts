import type { Logger } from '../../observability/logger.js';
import type { Metrics } from '../../observability/metrics.js';
import type { PoolRuntime } from '../../runtime/runtime.js';
import type { ClaimRequest, Claimed } from '../../store/pool-store.js';
import type { PoolBinding, ReconcileView } from '../../store/store.js';
import type { MoveResult } from '../../workspace/pool-folders.js';
import type { Workspaces } from '../../workspace/workspace.js';
import type { ObservedContainer } from '../../runtime/runtime.js';
import type { PoolReadiness } from '../pool/readiness.js';
import { logAction } from './action-log.js';
import type { ResolvedCustomer } from './desired.js';
import type { ReconcileEvents } from './reconcile-events.js';

/**
 * Binding a new customer to a warm pool slot (see domain/pool.ts), a step of the customer's
 * reconcile before its world is observed, like the repair. For a customer that is active, has
 * no container and no folder yet (a returning customer keeps its folder and starts cold), and
 * whose plan's pool has a ready slot:
 *
 * 1. claim: one transaction makes the slot the customer's and hands over its host port
 *    (pool-store.ts); from here on the store remembers the binding, so every later step is
 *    finished by whichever reconcile comes next, after a crash too;
 * 2. the slot's container is renamed `blytz-<name>` (its labels stay the slot's; the binding
 *    says whose it is);
 * 3. the slot's folder becomes `customers/<name>/` (pool-folders.ts);
 * 4. the customer's workspace is written into it: our fields of openclaw.json merged into the
 *    slot's (its gateway token, origins, model and its key, Telegram bot), which the gateway
 *    reloads in place (OpenClaw 2026.9.6 applies every one of them hot, a model key of the
 *    customer's own too: it is in `models.providers.<id>.apiKey`, see workspace/openclaw-config.ts);
 * 5. the gateway is seen with the customer's token in force (the template's `configProbe`): the
 *    token is written in the same file as the rest, and applied in the same reload. Only then is
 *    the binding applied; until then the customer is not Ready and gets no route.
 *
 * A bind whose configuration is not in force within `applyTimeoutMs` of the claim is given up:
 * its container is then replaced by a fresh one of the customer's own (a cold start), so a slot
 * that cannot take the configuration never leaves a customer without an assistant.
 */

export interface PoolBinderDeps {
  pools: {
    claim(request: ClaimRequest): Promise<Claimed | undefined>;
    markApplied(slot: number): Promise<void>;
    markBindFailed(slot: number, reason: string): Promise<void>;
  };
  runtime: PoolRuntime;
  folders: { moveToCustomer(slot: number, customer: string): Promise<MoveResult> };
  workspaces: Pick<Workspaces, 'write' | 'observe'>;
  readiness: PoolReadiness;
  metrics: Metrics;
  logger: Logger;
  /** A slot was claimed: the pool refills. */
  onClaimed: () => void;
  now: () => number;
  /** Give up a bind whose configuration is not in force this long after the claim (default 120 s). */
  applyTimeoutMs?: number;
  /** How long one reconcile waits for the configuration to be in force before looking again later (default 15 s). */
  waitMs?: number;
}

export type BindOutcome =
  /** Nothing to do: not a customer for the pool, or its binding is applied (or was given up). */
  | { kind: 'none' }
  /** The slot is the customer's, its configuration in force now. */
  | { kind: 'bound' }
  /** Claimed; the gateway has not shown the customer's configuration yet. */
  | { kind: 'pending'; note: string }
  /** Given up: the slot's container is replaced by a fresh one. */
  | { kind: 'failed'; reason: string };

const APPLY_TIMEOUT_MS = 120_000;
const WAIT_MS = 15_000;
/** While the slot's token still opens the gateway, looking again costs nothing: often. */
const OLD_TOKEN_POLL_MS = 100;
/** A refused token counts against the gateway's failed-auth limit (10 a minute per client): sparingly. */
const NEW_TOKEN_POLL_MS = 1_000;
const MAX_NEW_TOKEN_TRIES = 4;

export class PoolBinder {
  readonly #deps: PoolBinderDeps;

  constructor(deps: PoolBinderDeps) {
    this.#deps = deps;
  }

  /**
   * Claims a slot for the customer when it fits, and finishes a bind a claim began. `view` is
   * updated in place with a new claim (its binding and port). `containers`: the customer's, as
   * the reconcile read them.
   */
  async bind(
    view: ReconcileView,
    resolved: ResolvedCustomer,
    containers: ObservedContainer[],
    events: ReconcileEvents,
    signal: AbortSignal,
  ): Promise<BindOutcome> {
    const name = view.customer.name;
    let binding = view.binding;
    if (!binding) {
      const claimed = await this.#claim(view, resolved, containers);
      if (!claimed) return { kind: 'none' };
      binding = view.binding = claimed;
      view.ports = { ...view.ports, current: claimed.port };
      this.#event(events, name, 'Normal', 'PoolSlotClaimed', `claimed warm pool slot ${claimed.slot} (host port ${claimed.port})`);
    }
    if (binding.appliedAt !== null || binding.failed !== null) return { kind: 'none' };
    return this.#finish(view, binding, resolved, events, signal);
  }

  async #claim(view: ReconcileView, resolved: ResolvedCustomer, containers: ObservedContainer[]): Promise<Claimed | undefined> {
    const { customer } = view;
    const fleet = resolved.fleet;
    const eligible =
      customer.spec.state === 'active' && !customer.spec.paused && containers.length === 0 && fleet !== undefined;
    if (!eligible || !this.#deps.readiness.mayClaim(fleet.key)) return undefined;
    // A customer with a folder (one coming back) keeps its own state: it starts cold.
    if ((await this.#deps.workspaces.observe(customer.name)).exists) return undefined;
    const claimed = await this.#deps.pools.claim({
      customer: customer.name,
      plan: customer.spec.plan,
      template: customer.spec.template,
      fingerprint: fleet.fingerprint,
      specHash: resolved.desired.specHash,
      ownHash: resolved.desired.ownHash ?? '',
    });
    this.#deps.readiness.claimed(fleet.key, claimed !== undefined);
    if (claimed) {
      this.#deps.metrics.assistantStarts.inc({ plan: customer.spec.plan, source: 'pool' });
      this.#deps.onClaimed();
    }
    return claimed;
  }

  /** Steps 2-5, each idempotent: a reconcile after a crash redoes what is not done. */
  async #finish(
    view: ReconcileView,
    binding: PoolBinding,
    resolved: ResolvedCustomer,
    events: ReconcileEvents,
    signal: AbortSignal,
  ): Promise<BindOutcome> {
    const name = view.customer.name;
    const port = view.ports?.current;
    const fail = async (reason: string): Promise<BindOutcome> => {
      await this.#deps.pools.markBindFailed(binding.slot, reason);
      binding.failed = reason;
      this.#event(events, name, 'Warning', 'PoolBindFailed', `warm pool slot ${binding.slot}: ${reason}; a fresh container replaces it`);
      return { kind: 'failed', reason };
    };
    if (port === undefined) return fail('the customer holds no host port for it');
    if (!(await this.#deps.runtime.bindPoolContainer(binding.slot, name))) return fail("the slot's container is gone");
    const moved = await this.#deps.folders.moveToCustomer(binding.slot, name);
    if (moved === 'conflict') return fail('the customer already has a folder of its own');
    if (moved === 'missing') return fail("the slot's folder is gone");
    const rendered = resolved.rendered;
    if (!rendered) return fail('nothing to render for the customer');
    if ((await this.#deps.workspaces.observe(name)).contentHash !== rendered.contentHash) {
      await this.#deps.workspaces.write(name, rendered);
    }

    const probe = resolved.template?.configProbe;
    if (probe && resolved.gatewayToken) {
      const inForce = await this.#waitForToken(port, probe, binding.slotToken, resolved.gatewayToken, signal);
      if (!inForce) {
        const waited = this.#deps.now() - binding.boundAt.getTime();
        if (waited > (this.#deps.applyTimeoutMs ?? APPLY_TIMEOUT_MS)) {
          return fail(`its gateway did not take the customer's configuration within ${Math.round(waited / 1000)} s of the claim`);
        }
        return { kind: 'pending', note: `warm pool slot ${binding.slot}: waiting for its gateway to take the customer's configuration` };
      }
    }
    await this.#deps.pools.markApplied(binding.slot);
    binding.appliedAt = new Date(this.#deps.now());
    const seconds = (binding.appliedAt.getTime() - binding.boundAt.getTime()) / 1000;
    this.#deps.metrics.poolBindDuration.observe(seconds);
    this.#event(
      events,
      name,
      'Normal',
      'PoolSlotBound',
      `warm pool slot ${binding.slot} serves the customer: its gateway took the customer's configuration ${seconds.toFixed(1)} s after the claim`,
    );
    return { kind: 'bound' };
  }

  /**
   * Whether the customer's token is in force on the gateway, waited for (bounded). The slot's
   * token is probed first: while it still opens the gateway the reload has not happened, and
   * asking with a token the gateway accepts costs nothing; once it is refused (one failed
   * attempt on the gateway's limit) the customer's is asked, a few times at most.
   */
  async #waitForToken(
    port: number,
    probe: NonNullable<NonNullable<ResolvedCustomer['template']>['configProbe']>,
    slotToken: string,
    customerToken: string,
    signal: AbortSignal,
  ): Promise<boolean> {
    const deadline = this.#deps.now() + (this.#deps.waitMs ?? WAIT_MS);
    let newTries = 0;
    while (this.#deps.now() < deadline && !signal.aborted) {
      const old = await this.#deps.runtime.probeToken(port, probe, slotToken);
      if (old !== 'refused') {
        // Still the slot's configuration, or restarting in-process (a key that needs a restart): wait.
        await sleep(OLD_TOKEN_POLL_MS);
        continue;
      }
      if ((await this.#deps.runtime.probeToken(port, probe, customerToken)) === 'accepted') return true;
      if (++newTries >= MAX_NEW_TOKEN_TRIES) return false;
      await sleep(NEW_TOKEN_POLL_MS);
    }
    return false;
  }

  #event(events: ReconcileEvents, customer: string, type: 'Normal' | 'Warning', reason: string, message: string): void {
    events.record(type, reason, message);
    logAction(this.#deps.logger, { customer, type, reason, message });
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
