import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { Batcher } from '../../src/store/batcher.js';

interface Item {
  id: number;
  keys: string[];
  /** The statement fails for this input (as a unique key another row holds would). */
  bad?: boolean;
}

/** A statement taking `ticks` macrotask turns, recording what ran together and what was in flight. */
function recorder(ticks: () => number) {
  const batches: number[][] = [];
  let inFlight = 0;
  let mostInFlight = 0;
  const runningKeys = new Map<string, number>();
  const clashes: string[] = [];
  const run = async (inputs: readonly Item[]): Promise<string[]> => {
    batches.push(inputs.map((i) => i.id));
    inFlight++;
    mostInFlight = Math.max(mostInFlight, inFlight);
    for (const input of inputs)
      for (const key of input.keys) {
        if (runningKeys.has(key)) clashes.push(key);
        runningKeys.set(key, input.id);
      }
    try {
      for (let t = ticks(); t > 0; t--) await new Promise((r) => setImmediate(r));
      if (inputs.some((i) => i.bad)) throw Object.assign(new Error('duplicate key'), { code: '23505' });
      return inputs.map((i) => `out-${i.id}`);
    } finally {
      for (const input of inputs) for (const key of input.keys) runningKeys.delete(key);
      inFlight--;
    }
  };
  return { run, batches, clashes, mostInFlight: () => mostInFlight };
}

const items = fc.array(
  fc.record({
    keys: fc.uniqueArray(fc.constantFrom<string>('a', 'b', 'c', 'd', 'e'), { maxLength: 2 }),
    bad: fc.integer({ min: 0, max: 9 }).map((n) => n === 0),
  }),
  { minLength: 1, maxLength: 40 },
);

describe('Batcher', () => {
  it('runs the inputs of one turn of the event loop together, and what arrives while the lane is busy in the next batch', async () => {
    const { run, batches } = recorder(() => 3);
    const batcher = new Batcher(run, { lanes: 1, maxSize: 10 });
    const together = [0, 1].map((id) => batcher.submit({ id, keys: [] }));
    await new Promise((r) => setImmediate(r)); // the turn ends: 0 and 1 are in flight
    const later = [2, 3, 4].map((id) => batcher.submit({ id, keys: [] }));
    expect(await Promise.all([...together, ...later])).toEqual(['out-0', 'out-1', 'out-2', 'out-3', 'out-4']);
    expect(batches).toEqual([[0, 1], [2, 3, 4]]);
  });

  it('runs an input alone in a batch of one when nothing else arrives', async () => {
    const { run, batches } = recorder(() => 0);
    const batcher = new Batcher(run, { lanes: 2, maxSize: 10 });
    expect(await batcher.submit({ id: 7, keys: [] })).toBe('out-7');
    expect(await batcher.submit({ id: 8, keys: [] })).toBe('out-8');
    expect(batches).toEqual([[7], [8]]);
  });

  it('gives every input its own output or its own failure, within the bounds, keys apart and in order', async () => {
    await fc.assert(
      fc.asyncProperty(items, fc.integer({ min: 1, max: 3 }), fc.integer({ min: 1, max: 6 }), fc.infiniteStream(fc.nat(3)), async (specs, lanes, maxSize, delays) => {
        const { run, batches, clashes, mostInFlight } = recorder(() => delays.next().value as number);
        const batcher = new Batcher(run, { lanes, maxSize, keys: (i: Item) => i.keys, alone: (e) => (e as { code?: string }).code === '23505' });
        const inputs = specs.map((s, id) => ({ id, ...s }));
        const settled = await Promise.allSettled(inputs.map((input) => batcher.submit(input)));
        // Each input: its own output, or (only the bad ones) the failure.
        settled.forEach((result, id) => {
          if (inputs[id]?.bad) expect(result.status).toBe('rejected');
          else expect(result).toEqual({ status: 'fulfilled', value: `out-${id}` });
        });
        expect(Math.max(...batches.map((b) => b.length))).toBeLessThanOrEqual(maxSize);
        expect(mostInFlight()).toBeLessThanOrEqual(lanes);
        expect(clashes).toEqual([]);
        // Inputs sharing a key first ran in the order they were submitted.
        const firstRun = new Map<number, number>();
        batches.forEach((batch, n) => batch.forEach((id) => firstRun.has(id) || firstRun.set(id, n)));
        for (const key of ['a', 'b', 'c', 'd', 'e']) {
          const order = inputs.filter((i) => i.keys.includes(key)).map((i) => firstRun.get(i.id) as number);
          expect(order).toEqual([...order].sort((x, y) => x - y));
        }
      }),
      { numRuns: 200 },
    );
  });

  it("fails every input of the batch with a failure that is not one input's (the database is down)", async () => {
    const batcher = new Batcher<number, number>(
      async () => {
        throw new Error('connection refused');
      },
      { lanes: 1, maxSize: 10, alone: () => false },
    );
    const results = await Promise.allSettled([1, 2, 3].map((n) => batcher.submit(n)));
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected', 'rejected']);
  });

  it('stops running a failed batch one by one at a failure that is every input\'s', async () => {
    const calls: number[][] = [];
    const batcher = new Batcher<number, number>(
      async (inputs) => {
        calls.push([...inputs]);
        if (inputs.length > 1) throw Object.assign(new Error('duplicate key'), { code: '23505' });
        throw new Error('connection terminated');
      },
      { lanes: 1, maxSize: 10, alone: (e) => (e as { code?: string }).code === '23505' },
    );
    const results = await Promise.allSettled([1, 2, 3].map((n) => batcher.submit(n)));
    expect(results.map((r) => (r.status === 'rejected' ? (r.reason as Error).message : r.value))).toEqual([
      'connection terminated',
      'connection terminated',
      'connection terminated',
    ]);
    expect(calls).toEqual([[1, 2, 3], [1]]);
  });

  it('refuses a batch that does not answer every input', async () => {
    const batcher = new Batcher<number, number>(async (inputs) => inputs.slice(1), { lanes: 1, maxSize: 10 });
    await expect(batcher.submit(1)).rejects.toThrow('a batch of 1 gave 0 outputs');
  });
});
