import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse, stringify } from 'yaml';
import { Metrics } from '../../src/observability/metrics.js';

/**
 * deploy/prometheus with the real promtool (Debian's `prometheus` package; scripts/services.sh
 * tools installs it): the rules load, their unit tests (rules.test.yml: each alert fires when it
 * should and stays quiet when it should not) pass, the example config loads, and every query of
 * the Grafana dashboard is valid PromQL. The live /metrics check is test/e2e/metrics.test.ts.
 */

const ROOT = resolve(import.meta.dirname, '../..');
const DIR = join(ROOT, 'deploy/prometheus');
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

function promtool(args: string[], cwd = DIR): { status: number | null; out: string } {
  if (!existsSync('/usr/bin/promtool') && spawnSync('promtool', ['--version']).status !== 0) {
    throw new Error('promtool is missing: run `scripts/services.sh tools` (apt-get install -y prometheus) as root');
  }
  const result = spawnSync('promtool', args, { cwd, encoding: 'utf8' });
  return { status: result.status, out: `${result.stdout}${result.stderr}` };
}

interface Rule {
  alert: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
const groups = (parse(read('deploy/prometheus/rules.yml')) as { groups: Array<{ name: string; rules: Rule[] }> }).groups;
const rules = groups.flatMap((g) => g.rules);
const byName = (name: string) => rules.find((r) => r.alert === name)!;

const registered = new Metrics({ defaultMetrics: false }).registry
  .getMetricsAsArray()
  .map((m) => (m as unknown as { name: string }).name);
function familiesIn(expr: string): string[] {
  const withoutGrouping = expr.replace(/\b(by|without)\s*\([^)]*\)/g, '');
  return [...withoutGrouping.matchAll(/\b([a-z_][a-z0-9_]*)\s*(?=\{|\[|\)|\s*(?:==|>|<|!=))/g)]
    .map((m) => m[1]!.replace(/_(bucket|sum|count)$/, ''))
    .filter((n) => n.includes('_') && !['histogram_quantile', 'max_over_time', 'min_over_time'].includes(n));
}

describe('deploy/prometheus', () => {
  const scratch = mkdtempSync(join(tmpdir(), 'blytz-prom-'));
  afterAll(() => rmSync(scratch, { recursive: true, force: true }));

  it('promtool check rules accepts rules.yml', () => {
    const { status, out } = promtool(['check', 'rules', 'rules.yml']);
    expect(out).toContain(`SUCCESS: ${rules.length} rules found`);
    expect(status).toBe(0);
  });

  it('promtool test rules: every alert fires when it should and stays quiet when it should not', () => {
    const { status, out } = promtool(['test', 'rules', 'rules.test.yml']);
    expect(out).not.toContain('FAILED');
    expect(out).toContain('SUCCESS');
    expect(status).toBe(0);
    // Every alert is exercised by at least one firing expectation.
    const tests = parse(read('deploy/prometheus/rules.test.yml')) as {
      tests: Array<{ alert_rule_test: Array<{ alertname: string; exp_alerts: unknown[] }> }>;
    };
    const fired = new Set(
      tests.tests.flatMap((t) => t.alert_rule_test.filter((a) => a.exp_alerts.length > 0).map((a) => a.alertname)),
    );
    expect([...fired].sort()).toEqual(rules.map((r) => r.alert).sort());
  });

  it('promtool check config accepts the example prometheus.yml with the rules', () => {
    const config = parse(read('deploy/prometheus/prometheus.yml')) as {
      rule_files: string[];
      scrape_configs: Array<{ job_name: string }>;
    };
    expect(config.rule_files).toEqual(['rules.yml']);
    expect(config.scrape_configs.map((s) => s.job_name)).toEqual(['blytz']);
    const { status, out } = promtool(['check', 'config', 'prometheus.yml']);
    expect(out).toContain('SUCCESS');
    expect(status).toBe(0);
  });

  it('has the alerts an SRE asks for, each with severity, summary, description and a runbook section', () => {
    for (const name of [
      'BlytzControllerNoLeader',
      'BlytzReconcileErrorRateHigh',
      'BlytzCustomersNotReady',
      'BlytzCircuitBreakerOpen',
      'BlytzStripeWebhookStoreErrors',
      'BlytzWorkQueueDepthGrowing',
    ]) {
      expect(byName(name), name).toBeDefined();
    }
    expect(byName('BlytzControllerNoLeader').expr).toBe('max by (name) (leader_election_master_status) == 0');
    expect(byName('BlytzControllerNoLeader').for).toBe('5m');
    expect(byName('BlytzCircuitBreakerOpen').for).toBe('5m');
    expect(byName('BlytzCustomersNotReady').for).toBe('10m');
    // Fleet rollouts (issue 11): a rollout that paused itself on failed updates alerts.
    expect(byName('BlytzRolloutPausedByFailures').expr).toContain('blytz_rollout_paused{reason="failures"}');

    const doc = read('docs/deploy.md');
    const anchors = new Set(
      [...doc.matchAll(/^#{2,4} (.+)$/gm)].map((m) =>
        m[1]!
          .trim()
          .toLowerCase()
          .replace(/[^a-z0-9 -]/g, '')
          .replace(/ /g, '-'),
      ),
    );
    for (const rule of rules) {
      expect(['critical', 'warning'], rule.alert).toContain(rule.labels?.['severity']);
      expect(rule.annotations?.['summary'], rule.alert).toBeTruthy();
      expect(rule.annotations?.['description'], rule.alert).toBeTruthy();
      const runbook = rule.annotations?.['runbook'] ?? '';
      expect(runbook, rule.alert).toBe(`docs/deploy.md#${rule.alert.toLowerCase()}`);
      expect(anchors.has(rule.alert.toLowerCase()), `docs/deploy.md has a "${rule.alert}" section`).toBe(true);
    }
  });

  it('reads only metrics the server exports, with label values the code uses', () => {
    for (const rule of rules) {
      for (const family of familiesIn(rule.expr)) expect(registered, `${rule.alert}: ${family}`).toContain(family);
    }
    // Webhook outcomes: the ledger's outcomes plus the two the HTTP handler counts itself.
    const union = /export type WebhookOutcome =([^;]+);/.exec(read('src/store/billing-store.ts'))?.[1] ?? '';
    const handler = read('src/http/stripe-webhook.ts');
    const outcomes = new Set(
      [...union.matchAll(/'([a-z_]+)'/g), ...handler.matchAll(/count\([^,]+, '([a-z_]+)'\)/g)].map((m) => m[1]!),
    );
    expect(outcomes).toContain('error');
    expect(outcomes).toContain('invalid_signature');
    for (const rule of rules.filter((r) => r.expr.includes('blytz_stripe_webhook_events_total'))) {
      for (const m of rule.expr.matchAll(/outcome=~?"([^"]+)"/g)) {
        for (const value of m[1]!.split('|')) expect(outcomes, `${rule.alert}: outcome ${value}`).toContain(value);
      }
    }
    // Phases: the contract's; the settled ones never count as "not Ready".
    const phases = ['Pending', 'Provisioning', 'Ready', 'Degraded', 'Suspended', 'Terminating', 'Terminated', 'Failed'];
    for (const rule of rules.filter((r) => r.expr.includes('blytz_customers'))) {
      for (const m of rule.expr.matchAll(/phase=~?"([^"]+)"/g)) {
        for (const value of m[1]!.split('|')) expect(phases).toContain(value);
      }
    }
    const notReady = byName('BlytzCustomersNotReady').expr;
    for (const settled of ['Pending', 'Suspended', 'Terminated', 'Ready']) expect(notReady).not.toContain(settled);
  });

  it('every Grafana dashboard query is valid PromQL', () => {
    const dashboard = JSON.parse(read('deploy/grafana/blytz-dashboard.json')) as {
      panels: Array<{ title: string; targets?: Array<{ expr: string }> }>;
    };
    const exprs = dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
    expect(exprs.length).toBeGreaterThan(20);
    const asRules = {
      groups: [
        {
          name: 'dashboard',
          rules: exprs.map((expr, i) => ({
            record: `dashboard:query_${i}`,
            // Grafana's variables, as Grafana would substitute them.
            expr: expr.replaceAll('$__rate_interval', '1m').replaceAll('$job', '.+').replaceAll('$instance', '.+'),
          })),
        },
      ],
    };
    const file = join(scratch, 'dashboard-queries.yml');
    writeFileSync(file, stringify(asRules));
    const { status, out } = promtool(['check', 'rules', file], scratch);
    expect(out).toContain(`SUCCESS: ${exprs.length} rules found`);
    expect(status).toBe(0);
  });
});
