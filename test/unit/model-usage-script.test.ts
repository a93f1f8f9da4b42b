import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { projectRoot } from '../../src/paths.js';
import { waitFor } from '../support/wait-for.js';

/**
 * The status page's "Model use" section (web/assets/model-usage.js) with the page's elements
 * stood in for: what the customer reads for each kind of model access, above all that an
 * assistant without any model says so instead of staying silent.
 */

interface Element {
  hidden: boolean;
  textContent: string;
  max?: number;
  value?: number;
}

async function render(view: Record<string, unknown>): Promise<{ section: Element; text: Element; meter: Element }> {
  const text: Element = { hidden: false, textContent: '' };
  const meter: Element = { hidden: true, textContent: '' };
  const section = {
    hidden: true,
    textContent: '',
    querySelector: (selector: string) => (selector === '#model-usage-text' ? text : meter),
  };
  vi.stubGlobal('document', { getElementById: (id: string) => (id === 'model-usage' ? section : null) });
  vi.stubGlobal('fetch', async () => new Response(JSON.stringify(view), { status: 200 }));
  // The next poll, a minute later, is not this test's business (waitFor's own short timers are).
  const realSetTimeout = globalThis.setTimeout;
  vi.stubGlobal('setTimeout', (fn: () => void, ms: number) => (ms >= 60_000 ? 0 : realSetTimeout(fn, ms)));
  const script = (await import(pathToFileURL(join(projectRoot(), 'web', 'assets', 'model-usage.js')).href)) as {
    followModelUsage(base: string): void;
  };
  script.followModelUsage('/api/customers/alice');
  await waitFor(async () => !section.hidden, 2000);
  return { section, text, meter };
}

afterEach(() => {
  vi.unstubAllGlobals();
});

describe('the status page’s model use', () => {
  it('tells a customer without any model that the assistant cannot answer, and why', async () => {
    const { text, meter } = await render({ access: 'none', usedTokens: 0, includedTokens: 0, renewsAt: '2026-02-01T00:00:00Z' });
    expect(text.textContent).toContain('Your assistant has no AI model to answer with: this server does not include model access');
    expect(meter.hidden).toBe(true);
  });

  it('shows included use against the allowance, and says an own key is not metered', async () => {
    const included = await render({
      access: 'included',
      usedTokens: 1500,
      includedTokens: 2_000_000,
      exhausted: false,
      renewsAt: '2026-02-01T00:00:00Z',
    });
    expect(included.text.textContent).toBe(
      'This month your assistant has used 1,500 of its 2,000,000 included tokens. The allowance renews on 2026-02-01.',
    );
    expect(included.meter).toMatchObject({ hidden: false, max: 2_000_000, value: 1500 });
    const own = await render({ access: 'own-key', usedTokens: 0, includedTokens: 0, renewsAt: '2026-02-01T00:00:00Z' });
    expect(own.text.textContent).toContain('uses your own model provider key');
  });
});
