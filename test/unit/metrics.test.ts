import { describe, expect, it } from 'vitest';
import { PHASES } from '../../src/domain/customer.js';
import { Metrics } from '../../src/observability/metrics.js';

/** `{phase: value}` of blytz_customers as /metrics shows it. */
async function customersByPhase(metrics: Metrics): Promise<Record<string, number>> {
  const text = await metrics.registry.getSingleMetricAsString('blytz_customers');
  const out: Record<string, number> = {};
  for (const [, phase, value] of text.matchAll(/^blytz_customers\{phase="([^"]+)"\} (\S+)$/gm)) out[phase!] = Number(value);
  return out;
}

describe('blytz_customers', () => {
  it('has a sample for every phase, all zero, from the moment the registry exists', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    expect(await customersByPhase(metrics)).toEqual(Object.fromEntries(PHASES.map((p) => [p, 0])));
  });

  it('sets the counted phases and puts the others back to zero', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    metrics.setCustomerPhases({ Ready: 3, Provisioning: 1 });
    metrics.setCustomerPhases({ Ready: 2, Failed: 1 });
    const phases = await customersByPhase(metrics);
    expect(phases).toMatchObject({ Ready: 2, Failed: 1, Provisioning: 0, Pending: 0, Terminated: 0 });
    expect(Object.keys(phases).sort()).toEqual([...PHASES].sort());
  });

  it('keeps a phase it does not know (a newer server sharing the database) as counted', async () => {
    const metrics = new Metrics({ defaultMetrics: false });
    metrics.setCustomerPhases({ Hibernating: 2 });
    expect(await customersByPhase(metrics)).toMatchObject({ Hibernating: 2, Ready: 0 });
  });
});
