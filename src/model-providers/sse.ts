import { StringDecoder } from 'node:string_decoder';

/**
 * An incremental reader of Server-Sent Events (the WHATWG `text/event-stream` format), fed the
 * bytes of a streamed model response as they pass through the gateway. Only what metering needs:
 * each event's name and data. Chunks may split a line, a UTF-8 character or an event anywhere.
 */

export interface SseEvent {
  /** The `event:` field; `message` when the stream gives none (OpenAI's chat completions). */
  event: string;
  data: string;
}

/** A line longer than this is not an event a provider sends; reading stops rather than buffer it. */
export const MAX_SSE_LINE = 4 * 1024 * 1024;

export class SseReader {
  readonly #decoder = new StringDecoder('utf8');
  #pending = '';
  #event = '';
  #data: string[] = [];
  /** A lone `\r` ended the last chunk: a `\n` starting the next one belongs to it. */
  #afterCr = false;
  #overflowed = false;

  /** True once a line exceeded MAX_SSE_LINE; no further events are reported. */
  get overflowed(): boolean {
    return this.#overflowed;
  }

  /** The events completed by this chunk, in order. */
  push(chunk: Buffer | string): SseEvent[] {
    if (this.#overflowed) return [];
    let text = typeof chunk === 'string' ? chunk : this.#decoder.write(chunk);
    if (this.#afterCr && text.startsWith('\n')) text = text.slice(1);
    this.#afterCr = false;
    const events: SseEvent[] = [];
    let start = 0;
    for (let i = 0; i < text.length; i++) {
      const c = text.charCodeAt(i);
      if (c !== 10 && c !== 13) continue;
      const line = this.#pending + text.slice(start, i);
      this.#pending = '';
      this.#line(line, events);
      if (c === 13) {
        if (i + 1 < text.length) {
          if (text.charCodeAt(i + 1) === 10) i++;
        } else {
          this.#afterCr = true;
        }
      }
      start = i + 1;
    }
    this.#pending += text.slice(start);
    if (this.#pending.length > MAX_SSE_LINE) {
      this.#overflowed = true;
      this.#pending = '';
      this.#data = [];
    }
    return events;
  }

  /** The stream ended: an event without its closing blank line is dropped, as browsers do. */
  end(): void {
    this.#pending = '';
    this.#data = [];
    this.#event = '';
  }

  #line(line: string, events: SseEvent[]): void {
    if (line === '') {
      if (this.#data.length > 0) events.push({ event: this.#event || 'message', data: this.#data.join('\n') });
      this.#data = [];
      this.#event = '';
      return;
    }
    if (line.startsWith(':')) return; // a comment (keep-alive)
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'data') this.#data.push(value);
    else if (field === 'event') this.#event = value;
    // `id` and `retry` mean nothing to metering.
  }
}
