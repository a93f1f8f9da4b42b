/**
 * Many small statements run as one. Each input joins the queue; at the end of the event loop's
 * turn (setImmediate), and whenever a lane comes free, every input waiting (up to `maxSize`)
 * goes in one batch: one statement and one round trip for all of them. Nothing waits on a
 * timer: alone, an input runs in a batch of one as soon as the turn ends; under load, the
 * requests read in one turn go together, and so does whatever arrived while the lanes were
 * busy. That is where the time went for Stripe webhooks arriving in a burst: each event's own
 * round trips, and each its own commit, for Postgres and for this process alike
 * (docs/benchmarks.md).
 *
 * Keys keep inputs that touch the same thing apart (one customer's row, one event id): two
 * inputs sharing a key never run in one batch nor in two batches at once, and they run in the
 * order they arrived. So a batch never updates one row twice, and two batches in flight never
 * lock rows in opposite orders.
 */

export interface BatcherOptions<I> {
  /** Batches in flight at once (each holds a database connection while it runs). */
  lanes: number;
  /** Inputs per batch at most. */
  maxSize: number;
  /** What an input touches; none by default. */
  keys?: (input: I) => readonly string[];
  /**
   * Failures that belong to one input of the batch (a unique key another row holds): its inputs
   * then run again one by one, so only the input at fault fails. Any other failure (the
   * database is unreachable) is every input's.
   */
  alone?: (error: unknown) => boolean;
}

/** Runs a batch: one output per input, in the inputs' order. */
export type RunBatch<I, O> = (inputs: readonly I[]) => Promise<readonly O[]>;

interface Waiting<I, O> {
  input: I;
  keys: readonly string[];
  resolve(output: O): void;
  reject(error: unknown): void;
}

export class Batcher<I, O> {
  readonly #run: RunBatch<I, O>;
  readonly #options: BatcherOptions<I>;
  #queue: Array<Waiting<I, O>> = [];
  /** Keys of the inputs in flight. */
  readonly #busy = new Set<string>();
  #inFlight = 0;
  #pumpScheduled = false;

  constructor(run: RunBatch<I, O>, options: BatcherOptions<I>) {
    if (options.lanes < 1 || options.maxSize < 1) throw new Error('a batcher needs at least one lane and one input per batch');
    this.#run = run;
    this.#options = options;
  }

  /** Runs `input` in the next batch it may join; its own output, or the batch's failure. */
  submit(input: I): Promise<O> {
    return new Promise<O>((resolve, reject) => {
      this.#queue.push({ input, keys: this.#options.keys?.(input) ?? [], resolve, reject });
      if (this.#pumpScheduled) return;
      this.#pumpScheduled = true;
      setImmediate(() => {
        this.#pumpScheduled = false;
        this.#pump();
      });
    });
  }

  #pump(): void {
    while (this.#inFlight < this.#options.lanes && this.#queue.length > 0) {
      const batch = this.#take();
      if (batch.length === 0) return; // everything waiting touches something in flight
      this.#inFlight++;
      for (const waiting of batch) for (const key of waiting.keys) this.#busy.add(key);
      void this.#settle(batch).finally(() => {
        for (const waiting of batch) for (const key of waiting.keys) this.#busy.delete(key);
        this.#inFlight--;
        this.#pump();
      });
    }
  }

  /** The next batch: waiting inputs in order, skipping (and holding back the keys of) those that must wait. */
  #take(): Array<Waiting<I, O>> {
    const batch: Array<Waiting<I, O>> = [];
    const rest: Array<Waiting<I, O>> = [];
    const claimed = new Set<string>();
    for (const waiting of this.#queue) {
      const free = batch.length < this.#options.maxSize && waiting.keys.every((k) => !this.#busy.has(k) && !claimed.has(k));
      (free ? batch : rest).push(waiting);
      // A later input with one of these keys comes after this one, whether it goes now or not.
      for (const key of waiting.keys) claimed.add(key);
    }
    this.#queue = rest;
    return batch;
  }

  async #settle(batch: Array<Waiting<I, O>>): Promise<void> {
    try {
      const outputs = await this.#runChecked(batch);
      batch.forEach((waiting, i) => waiting.resolve(outputs[i] as O));
    } catch (error) {
      if (batch.length > 1 && this.#options.alone?.(error) === true) {
        await this.#oneByOne(batch);
        return;
      }
      for (const waiting of batch) waiting.reject(error);
    }
  }

  /** A failed batch's inputs again, one at a time in its lane; a failure that is not one input's ends it for all. */
  async #oneByOne(batch: Array<Waiting<I, O>>): Promise<void> {
    for (const [i, waiting] of batch.entries()) {
      try {
        const [output] = await this.#runChecked([waiting]);
        waiting.resolve(output as O);
      } catch (error) {
        if (this.#options.alone?.(error) === true) {
          waiting.reject(error);
          continue;
        }
        for (const rest of batch.slice(i)) rest.reject(error);
        return;
      }
    }
  }

  async #runChecked(batch: Array<Waiting<I, O>>): Promise<readonly O[]> {
    const outputs = await this.#run(batch.map((w) => w.input));
    if (outputs.length !== batch.length) throw new Error(`a batch of ${batch.length} gave ${outputs.length} outputs`);
    return outputs;
  }
}
