import { describe, expect, it } from 'vitest';
import { Executor, ROUTE_DRAIN_MS, type ExecutorDeps } from '../../src/controller/customer/execute.js';
import type { Action } from '../../src/controller/customer/plan.js';
import { ReconcileEvents } from '../../src/controller/customer/reconcile-events.js';
import { RestartBackoff } from '../../src/controller/customer/restart-backoff.js';
import { createLogger } from '../../src/observability/logger.js';
import { Metrics } from '../../src/observability/metrics.js';

/**
 * The drain of a container the route just left: Caddy's previous configuration finishes the
 * requests it accepted, to the old upstream, after the switch has returned; they must not meet a
 * stopped container. The executor waits before the graceful stop, and only where the plan says
 * the route left the container a moment ago.
 */
function executorRecording(calls: string[]): Executor {
  const runtime = {
    stop: async (id: string) => void calls.push(`stop ${id}`),
    remove: async (id: string) => void calls.push(`remove ${id}`),
    upstream: (_customer: string, port: number) => `127.0.0.1:${port}`,
  };
  const deps = {
    store: {},
    ports: {},
    runtime,
    routes: {},
    workspaces: {},
    metrics: new Metrics(),
    logger: createLogger({ level: 'silent' }),
    baseDomain: 'blytz.test',
    restarts: new RestartBackoff(),
    now: () => 0,
    sleep: async (ms: number) => void calls.push(`sleep ${ms}`),
  } as unknown as ExecutorDeps;
  return new Executor(deps);
}

const run = (executor: Executor, actions: Action[]) =>
  executor.execute('alice', actions, undefined, new AbortController().signal, false, new ReconcileEvents(), {});

describe('executor: draining a container the route just left', () => {
  it('waits ROUTE_DRAIN_MS before the graceful stop of a drained container', async () => {
    const calls: string[] = [];
    await run(executorRecording(calls), [
      { type: 'removeContainer', id: 'old', drift: 'container_outdated', graceful: true, drain: true },
    ]);
    expect(calls).toEqual([`sleep ${ROUTE_DRAIN_MS}`, 'stop old', 'remove old']);
  });

  it('removes at once what no route pointed at a moment ago', async () => {
    const calls: string[] = [];
    await run(executorRecording(calls), [
      { type: 'removeContainer', id: 'a', drift: 'container_outdated', graceful: true },
      { type: 'removeContainer', id: 'b', drift: 'container_duplicate' },
    ]);
    expect(calls).toEqual(['stop a', 'remove a', 'remove b']);
  });
});
