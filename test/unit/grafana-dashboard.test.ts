import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Metrics } from '../../src/observability/metrics.js';

/**
 * deploy/grafana/blytz-dashboard.json shows every metric family of contract section 6, with
 * queries that group only by labels those metrics really have, on a Prometheus datasource
 * chosen by a variable. (The PromQL itself is parsed by promtool in
 * test/integration/prometheus-rules.test.ts.)
 */

const ROOT = resolve(import.meta.dirname, '../..');

interface Target {
  expr: string;
  refId: string;
  legendFormat?: string;
  datasource?: { type: string; uid: string };
}
interface Panel {
  id: number;
  type: string;
  title: string;
  description?: string;
  datasource?: { type: string; uid: string };
  gridPos: { x: number; y: number; w: number; h: number };
  targets?: Target[];
}
interface Dashboard {
  uid: string;
  title: string;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query: unknown; datasource?: { uid: string } }> };
}

const dashboard = JSON.parse(readFileSync(join(ROOT, 'deploy/grafana/blytz-dashboard.json'), 'utf8')) as Dashboard;
const panels = dashboard.panels.filter((p) => p.type !== 'row');
const targets = panels.flatMap((p) => (p.targets ?? []).map((t) => ({ panel: p, ...t })));

/** Contract section 6, by name. */
const CONTRACT_METRICS = [
  'controller_runtime_reconcile_total',
  'controller_runtime_reconcile_errors_total',
  'controller_runtime_reconcile_time_seconds',
  'controller_runtime_active_workers',
  'controller_runtime_max_concurrent_reconciles',
  'workqueue_depth',
  'workqueue_adds_total',
  'workqueue_queue_duration_seconds',
  'workqueue_work_duration_seconds',
  'workqueue_retries_total',
  'workqueue_unfinished_work_seconds',
  'workqueue_longest_running_processor_seconds',
  'leader_election_master_status',
  'blytz_customers',
  'blytz_drift_corrections_total',
  'blytz_circuit_breaker_state',
  'blytz_external_call_duration_seconds',
  'blytz_stripe_webhook_events_total',
  'blytz_provision_duration_seconds',
  'http_request_duration_seconds',
  // Fleet rollouts (issue 11).
  'blytz_rollout_customers',
  'blytz_rollout_paused',
  // Included model access (issue 23).
  'blytz_model_requests_total',
  'blytz_model_tokens_total',
  'blytz_model_requests_in_flight',
  'blytz_model_period_tokens',
  'blytz_model_budget_tokens',
  'blytz_stripe_meter_events_total',
  // Backups (issue 20).
  'blytz_backup_last_success_timestamp_seconds',
  'blytz_backup_schedule_seconds',
  'blytz_backup_duration_seconds',
  'blytz_backup_size_bytes',
  // Tenant isolation on Docker (issue 19).
  'blytz_tenant_firewall',
  // Warm pools (issue 22).
  'blytz_pool_size',
  'blytz_pool_slots',
  'blytz_assistant_starts_total',
  'blytz_pool_bind_duration_seconds',
];

const ownMetrics = new Metrics({ defaultMetrics: false });
const registered = ownMetrics.registry.getMetricsAsArray().map((m) => (m as unknown as { name: string }).name);
const labelsOf = (name: string): string[] =>
  (ownMetrics.registry.getSingleMetric(name) as unknown as { labelNames?: string[] } | undefined)?.labelNames ?? [];

/** Metric families an expression reads (histogram series map back to their family). */
function familiesIn(expr: string): string[] {
  const names = [...expr.matchAll(/\b([a-z_][a-z0-9_]*)\s*(?=\{|\[)/g)].map((m) => m[1]!);
  return names.map((n) => n.replace(/_(bucket|sum|count)$/, '')).filter((n) => !['by', 'without'].includes(n));
}

describe('deploy/grafana/blytz-dashboard.json', () => {
  it('has a panel reading every contract section 6 metric family', () => {
    const shown = new Set(targets.flatMap((t) => familiesIn(t.expr)));
    const missing = CONTRACT_METRICS.filter((name) => !shown.has(name));
    expect(missing).toEqual([]);
  });

  it('covers every metric the server registers (so a new one needs a panel)', () => {
    expect(registered.sort()).toEqual([...CONTRACT_METRICS].sort());
  });

  it('shows the default process metrics too', () => {
    const shown = new Set(targets.flatMap((t) => familiesIn(t.expr)));
    for (const name of ['process_resident_memory_bytes', 'process_cpu_seconds_total', 'nodejs_eventloop_lag_p99_seconds']) {
      expect(shown.has(name), name).toBe(true);
    }
  });

  it('groups and filters only by labels the metrics have', () => {
    const generic = new Set(['le', 'instance', 'job']);
    for (const target of targets) {
      const families = familiesIn(target.expr).filter((f) => registered.includes(f));
      const allowed = new Set([...generic, ...families.flatMap(labelsOf)]);
      const grouped = [...target.expr.matchAll(/\bby \(([^)]*)\)/g)].flatMap((m) => m[1]!.split(',').map((s) => s.trim()));
      const matched = [...target.expr.matchAll(/\{([^}]*)\}/g)].flatMap((m) =>
        [...m[1]!.matchAll(/([a-z_]+)\s*(?:=~|!~|!=|=)/g)].map((l) => l[1]!),
      );
      for (const label of [...grouped, ...matched]) {
        if (families.length === 0) continue; // process metrics: only job/instance are used
        expect(allowed.has(label), `${target.panel.title}: label "${label}" in ${target.expr}`).toBe(true);
      }
      // Legends name labels the query keeps.
      for (const m of (target.legendFormat ?? '').matchAll(/\{\{(\w+)\}\}/g)) {
        expect(grouped.length === 0 || grouped.includes(m[1]!), `${target.panel.title}: legend {{${m[1]}}}`).toBe(true);
      }
    }
  });

  it('queries a Prometheus datasource chosen by a variable, filtered by job and instance', () => {
    const variables = dashboard.templating.list;
    const datasource = variables.find((v) => v.name === 'datasource');
    expect(datasource).toMatchObject({ type: 'datasource', query: 'prometheus' });
    expect(variables.map((v) => v.name)).toEqual(['datasource', 'job', 'instance']);
    for (const panel of panels) {
      expect(panel.datasource, panel.title).toEqual({ type: 'prometheus', uid: '${datasource}' });
      expect(panel.targets?.length, panel.title).toBeGreaterThan(0);
      expect(panel.description, panel.title).toBeTruthy();
    }
    for (const target of targets) {
      expect(target.datasource).toEqual({ type: 'prometheus', uid: '${datasource}' });
      for (const selector of target.expr.matchAll(/\{([^}]*)\}/g)) {
        expect(selector[1], target.expr).toContain('job=~"$job", instance=~"$instance"');
      }
    }
  });

  it('is laid out on the 24-column grid without overlaps, with unique ids and refIds', () => {
    expect(dashboard.uid).toBe('blytz-control-plane');
    const ids = dashboard.panels.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const panel of dashboard.panels) {
      expect(panel.gridPos.x + panel.gridPos.w, panel.title).toBeLessThanOrEqual(24);
      const refs = (panel.targets ?? []).map((t) => t.refId);
      expect(new Set(refs).size, panel.title).toBe(refs.length);
    }
    const overlap = (a: Panel['gridPos'], b: Panel['gridPos']) =>
      a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
    for (const [i, a] of dashboard.panels.entries()) {
      for (const b of dashboard.panels.slice(i + 1)) expect(overlap(a.gridPos, b.gridPos), `${a.title} / ${b.title}`).toBe(false);
    }
  });
});
