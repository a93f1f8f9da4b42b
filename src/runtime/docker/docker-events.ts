import Docker from 'dockerode';
import type { Logger } from '../../observability/logger.js';
import type { Guard } from '../../resilience/guard.js';
import { reconnectDelayMs } from '../../resilience/backoff.js';
import type { EventSource, WorldEventSink } from '../../controller/event-source.js';
import { checkExtraLabels, labelFilter } from '../../domain/labels.js';
import { identityOf } from './identity.js';

/**
 * The engine's container events for our labels, turned into "look at customer X again".
 * Events are hints, never state: the engine keeps only its last 256 events, so whenever the
 * stream was down (engine restart, socket error) we resume with `since` and also ask for a full
 * resync, which catches whatever the replay could not.
 */

/**
 * What can make a container differ from what the controller last made it. A restart-policy
 * restart shows as `die` then `start`; `start` also reveals a hand-started foreign container.
 * Health checks run as `exec_*` events and would flood the queue: they are not subscribed to.
 * Nor is `kill`: it is sent when a signal is, before the process has died, so a reconcile it
 * started would find the container still running and delay the one the `die` that follows
 * needs (a key being reconciled waits to be reconciled again); a signal that ends the process
 * shows as `die`, and one that does not changes nothing.
 */
export const WATCHED_ACTIONS = [
  'start',
  'die',
  'stop',
  'destroy',
  'oom',
  'health_status',
  'pause',
  'unpause',
  'restart',
] as const;

export interface DockerEventSourceOptions {
  docker?: Docker;
  /** Must match the runtime's, so only our own containers are seen. */
  extraLabels?: Record<string, string>;
  logger?: Pick<Logger, 'warn' | 'info'>;
  /** Reconnect backoff: doubles from min to max, each delay jittered by ±50%. */
  minReconnectMs?: number;
  maxReconnectMs?: number;
}

interface EngineEvent {
  Type?: string;
  Action?: string;
  Actor?: { ID?: string; Attributes?: Record<string, string> };
  time?: number;
}

export class DockerEventSource implements EventSource {
  readonly #guard: Guard;
  readonly #docker: Docker;
  readonly #labels: string[];
  readonly #logger: DockerEventSourceOptions['logger'];
  readonly #minReconnectMs: number;
  readonly #maxReconnectMs: number;

  #sink: WorldEventSink | undefined;
  #stopped = true;
  #abort = new AbortController();
  #stream: NodeJS.ReadableStream | undefined;
  #timer: NodeJS.Timeout | undefined;
  #failures = 0;
  /** Engine time (unix seconds) to resume from: the last event seen, or when the last stream opened. */
  #since: number | undefined;
  /** Set when the stream was lost: the next successful connect triggers a resync. */
  #gapReason: string | undefined;

  constructor(guard: Guard, options: DockerEventSourceOptions = {}) {
    this.#guard = guard;
    this.#docker = options.docker ?? new Docker();
    this.#labels = labelFilter(checkExtraLabels(options.extraLabels ?? {}));
    this.#logger = options.logger;
    this.#minReconnectMs = options.minReconnectMs ?? 500;
    this.#maxReconnectMs = options.maxReconnectMs ?? 30_000;
  }

  /** Resolves after the first subscription attempt; if it failed, reconnecting goes on in the background. */
  async start(sink: WorldEventSink): Promise<void> {
    if (!this.#stopped) return;
    this.#sink = sink;
    this.#stopped = false;
    this.#abort = new AbortController();
    await this.#connect();
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    this.#abort.abort();
    this.#closeStream();
  }

  /** True while subscribed (for tests and diagnostics). */
  get connected(): boolean {
    return this.#stream !== undefined;
  }

  async #connect(): Promise<void> {
    if (this.#stopped) return;
    const openedAt = Math.floor(Date.now() / 1000);
    const stop = this.#abort.signal;
    try {
      const options: Docker.GetEventsOptions & { abortSignal: AbortSignal } = {
        filters: { type: ['container'], label: this.#labels, event: [...WATCHED_ACTIONS] },
        abortSignal: stop,
      };
      if (this.#since !== undefined) options.since = this.#since;
      // Only opening the stream goes through the guard (it is long-lived after that). Not
      // retried there: this loop has its own backoff.
      const stream = await this.#guard('getEvents', () => this.#docker.getEvents(options), { retry: false });
      if (this.#stopped) {
        (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
        return;
      }
      this.#attach(stream);
      this.#since = Math.max(this.#since ?? 0, openedAt - 1);
      this.#failures = 0;
      if (this.#gapReason !== undefined) {
        const reason = this.#gapReason;
        this.#gapReason = undefined;
        this.#logger?.info({ reason }, 'docker event stream reconnected; resyncing');
        this.#sink?.resync(`docker event stream reconnected after ${reason}`);
      }
    } catch (error) {
      if (this.#stopped) return;
      this.#gapReason ??= `failing to subscribe (${(error as Error).message})`;
      this.#logger?.warn({ err: error }, 'docker event stream: subscribe failed; retrying');
      this.#scheduleReconnect();
    }
  }

  #attach(stream: NodeJS.ReadableStream): void {
    this.#stream = stream;
    let buffer = '';
    stream.setEncoding?.('utf8');
    stream.on('data', (chunk: string | Buffer) => {
      buffer += chunk.toString();
      let newline: number;
      while ((newline = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, newline).trim();
        buffer = buffer.slice(newline + 1);
        if (line) this.#handle(line);
      }
    });
    const lost = (why: string) => {
      if (this.#stream !== stream) return; // already handled ('end' and 'close' both fire)
      this.#stream = undefined;
      if (this.#stopped) return;
      this.#gapReason ??= why;
      this.#logger?.warn({ reason: why }, 'docker event stream lost; reconnecting');
      this.#scheduleReconnect();
    };
    stream.on('end', () => lost('the stream ended (engine restart?)'));
    stream.on('close', () => lost('the stream closed'));
    stream.on('error', (error: Error) => lost(`a stream error (${error.message})`));
  }

  #handle(line: string): void {
    let event: EngineEvent;
    try {
      event = JSON.parse(line) as EngineEvent;
    } catch {
      return; // a torn line from a dying connection; the resync after the gap covers it
    }
    if (typeof event.time === 'number') this.#since = Math.max(this.#since ?? 0, event.time);
    const action = event.Action ?? '';
    // The engine's filter already excludes them; belt and braces, since they arrive in floods.
    if (event.Type !== 'container' || action.startsWith('exec_')) return;
    // Its customer: by label, or by name for a pool slot a customer claimed (identity.ts).
    const attributes = event.Actor?.Attributes ?? {};
    const { customer } = identityOf(attributes, attributes['name'] ?? '');
    if (customer) this.#sink?.enqueue(customer);
  }

  #scheduleReconnect(): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    const delay = reconnectDelayMs(this.#failures, this.#minReconnectMs, this.#maxReconnectMs);
    this.#failures += 1;
    this.#timer = setTimeout(() => void this.#connect(), delay);
  }

  #closeStream(): void {
    const stream = this.#stream as (NodeJS.ReadableStream & { destroy?: () => void }) | undefined;
    this.#stream = undefined;
    stream?.destroy?.();
  }
}
