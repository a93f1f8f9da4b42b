import { SseReader } from './sse.js';

/**
 * Token usage read from the provider's own answer, the only source metering trusts: the usage
 * fields of a JSON response, or of the events of a streamed (SSE) one, for each API style the
 * gateway speaks. Pure, fed the response bytes as they pass through.
 *
 * Normalised so that every API counts the same way:
 * - inputTokens: every prompt token, cached or not (OpenAI's prompt/input tokens already include
 *   cached ones; Anthropic reports uncached, cache-write and cache-read input separately, so they
 *   are added up);
 * - cachedInputTokens: the part of inputTokens read from the provider's prompt cache;
 * - outputTokens: every generated token, reasoning included.
 */

export const MODEL_APIS = ['openai-chat', 'openai-responses', 'anthropic-messages'] as const;
export type ModelApi = (typeof MODEL_APIS)[number];

export interface Usage {
  inputTokens: number;
  cachedInputTokens: number;
  outputTokens: number;
}

export const NO_USAGE: Usage = Object.freeze({ inputTokens: 0, cachedInputTokens: 0, outputTokens: 0 });

export function totalTokens(usage: Usage): number {
  return usage.inputTokens + usage.outputTokens;
}

/** Largest JSON answer buffered to read its usage; a model answer is far smaller. */
export const MAX_METERED_JSON = 32 * 1024 * 1024;

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** A token count: a non-negative safe integer, anything else counts as absent. */
function count(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= 0 ? value : undefined;
}

function field(object: unknown, ...path: string[]): unknown {
  let node: unknown = object;
  for (const key of path) {
    if (!isObject(node)) return undefined;
    node = node[key];
  }
  return node;
}

/** OpenAI chat completions' `usage` (JSON answer, or the last chunk of a stream with include_usage). */
export function openAiChatUsage(usage: unknown): Usage | undefined {
  const input = count(field(usage, 'prompt_tokens'));
  const output = count(field(usage, 'completion_tokens'));
  if (input === undefined || output === undefined) return undefined;
  return {
    inputTokens: input,
    cachedInputTokens: count(field(usage, 'prompt_tokens_details', 'cached_tokens')) ?? 0,
    outputTokens: output,
  };
}

/** OpenAI responses' `usage` (JSON answer, or `response.usage` of the terminal stream event). */
export function openAiResponsesUsage(usage: unknown): Usage | undefined {
  const input = count(field(usage, 'input_tokens'));
  const output = count(field(usage, 'output_tokens'));
  if (input === undefined || output === undefined) return undefined;
  return {
    inputTokens: input,
    cachedInputTokens: count(field(usage, 'input_tokens_details', 'cached_tokens')) ?? 0,
    outputTokens: output,
  };
}

/** Anthropic's `usage`: uncached, cache-write and cache-read input are reported apart. */
export function anthropicUsage(usage: unknown): Usage | undefined {
  const input = count(field(usage, 'input_tokens'));
  const output = count(field(usage, 'output_tokens'));
  if (input === undefined || output === undefined) return undefined;
  const cacheWrite = count(field(usage, 'cache_creation_input_tokens')) ?? 0;
  const cacheRead = count(field(usage, 'cache_read_input_tokens')) ?? 0;
  return { inputTokens: input + cacheWrite + cacheRead, cachedInputTokens: cacheRead, outputTokens: output };
}

/** The usage of a complete JSON answer of `api`, or undefined when it carries none. */
export function usageOfJson(api: ModelApi, body: unknown): Usage | undefined {
  const usage = field(body, 'usage');
  switch (api) {
    case 'openai-chat':
      return openAiChatUsage(usage);
    case 'openai-responses':
      return openAiResponsesUsage(usage);
    case 'anthropic-messages':
      return anthropicUsage(usage);
  }
}

/** Reads usage from a response body as it streams by. */
export interface UsageMeter {
  push(chunk: Buffer): void;
  /** The body ended (completely or not): the usage it reported, if any. */
  finish(): Usage | undefined;
}

export function createUsageMeter(api: ModelApi, streamed: boolean): UsageMeter {
  return streamed ? new StreamMeter(api) : new JsonMeter(api);
}

class JsonMeter implements UsageMeter {
  readonly #chunks: Buffer[] = [];
  #size = 0;
  #tooLarge = false;

  constructor(readonly api: ModelApi) {}

  push(chunk: Buffer): void {
    if (this.#tooLarge) return;
    this.#size += chunk.length;
    if (this.#size > MAX_METERED_JSON) {
      this.#tooLarge = true;
      this.#chunks.length = 0;
      return;
    }
    this.#chunks.push(chunk);
  }

  finish(): Usage | undefined {
    if (this.#tooLarge) return undefined;
    try {
      return usageOfJson(this.api, JSON.parse(Buffer.concat(this.#chunks).toString('utf8')));
    } catch {
      return undefined;
    }
  }
}

const TERMINAL_RESPONSE_EVENTS = new Set(['response.completed', 'response.incomplete', 'response.failed']);

class StreamMeter implements UsageMeter {
  readonly #reader = new SseReader();
  /** Anthropic: message_start's usage, then message_delta's cumulative counts over it. */
  #anthropic: Json | undefined;
  #usage: Usage | undefined;

  constructor(readonly api: ModelApi) {}

  push(chunk: Buffer): void {
    for (const { event: name, data } of this.#reader.push(chunk)) {
      // Most events are text deltas: only the few that can carry usage are parsed.
      if (!this.#mayCarryUsage(name, data)) continue;
      let event: unknown;
      try {
        event = JSON.parse(data);
      } catch {
        continue;
      }
      this.#event(event);
    }
  }

  finish(): Usage | undefined {
    this.#reader.end();
    if (this.api === 'anthropic-messages' && this.#anthropic) return anthropicUsage(this.#anthropic);
    return this.#usage;
  }

  #mayCarryUsage(name: string, data: string): boolean {
    switch (this.api) {
      case 'openai-chat':
        return data.includes('"prompt_tokens"');
      case 'openai-responses':
        return name === 'message' ? data.includes('"usage"') : TERMINAL_RESPONSE_EVENTS.has(name);
      case 'anthropic-messages':
        return name === 'message' ? data.includes('"usage"') : name === 'message_start' || name === 'message_delta';
    }
  }

  #event(event: unknown): void {
    switch (this.api) {
      case 'openai-chat': {
        // Only the last chunk carries usage (stream_options.include_usage, which the gateway sets).
        const usage = openAiChatUsage(field(event, 'usage'));
        if (usage) this.#usage = usage;
        return;
      }
      case 'openai-responses': {
        // The terminal event (completed, incomplete or failed) carries the response with its usage.
        const type = field(event, 'type');
        if (typeof type === 'string' && TERMINAL_RESPONSE_EVENTS.has(type)) {
          const usage = openAiResponsesUsage(field(event, 'response', 'usage'));
          if (usage) this.#usage = usage;
        }
        return;
      }
      case 'anthropic-messages': {
        const type = field(event, 'type');
        if (type === 'message_start') {
          const usage = field(event, 'message', 'usage');
          if (isObject(usage)) this.#anthropic = { ...usage };
        } else if (type === 'message_delta') {
          // Counts here are cumulative for the whole message and replace message_start's.
          const usage = field(event, 'usage');
          if (isObject(usage)) {
            const merged: Json = { ...this.#anthropic };
            for (const [key, value] of Object.entries(usage)) if (count(value) !== undefined) merged[key] = value;
            this.#anthropic = merged;
          }
        }
        return;
      }
    }
  }
}
