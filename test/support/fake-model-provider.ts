import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * A local stand-in for OpenAI's and Anthropic's APIs (the gateway's BLYTZ_OPENAI_API_BASE and
 * BLYTZ_ANTHROPIC_API_BASE), speaking their wire formats: OpenAI chat completions and responses,
 * Anthropic messages, each as one JSON answer or streamed as Server-Sent Events, with the usage
 * fields each API puts where it puts them (the last chat chunk when include_usage is asked for,
 * `response.completed`, `message_start` + `message_delta`). Keys are checked as the real APIs
 * check them, errors come in each API's error format, and a test can make it fail, limit or cut
 * a stream. Every request and every usage it reported is recorded, so a test can compare what
 * the gateway metered with what the "provider" said.
 */

export const FAKE_OPENAI_KEY = 'sk-fake-openai-platform-key-0123456789abcdef';
export const FAKE_ANTHROPIC_KEY = 'sk-ant-fake-platform-key-0123456789abcdef';

export type FakeApi = 'openai-chat' | 'openai-responses' | 'anthropic-messages';

export interface FakeUsage {
  inputTokens: number;
  cachedInputTokens: number;
  outputTokens: number;
}

export interface FakeModelRequest {
  api: FakeApi | 'other';
  method: string;
  path: string;
  headers: IncomingMessage['headers'];
  body: unknown;
  /** The usage this answer reported (absent for errors). */
  usage?: FakeUsage;
  streamed: boolean;
}

/**
 * What the next request gets instead of a normal answer:
 * - `{status, body?, headers?}`: that error (a body in the API's format when none is given);
 * - `reset`: the connection is destroyed before any answer;
 * - `cut`: a streamed answer stops after its first event (no usage event), the connection destroyed;
 * - `stall`: headers and the first event are sent, then nothing until the test calls `releaseStalls`;
 * - `hold`: nothing at all, not even headers, until the test calls `releaseStalls`; then the answer.
 */
export type FakeFault = { status: number; body?: unknown; headers?: Record<string, string> } | 'reset' | 'cut' | 'stall' | 'hold';

export interface FakeModelProvider {
  url: string;
  port: number;
  requests: FakeModelRequest[];
  /** Consumed one per request, in order. */
  faults: FakeFault[];
  /** Text the model "says"; tokens are its words. */
  reply: string;
  /** Cached input tokens reported on every answer (a share of the input). */
  cachedInputTokens: number;
  /** Delay between streamed events (a benchmark's generation speed); 0 by default. */
  eventDelayMs: number;
  /** Total usage reported across successful answers, by API. */
  reported(api?: FakeApi): FakeUsage;
  releaseStalls(): void;
  close(): Promise<void>;
}

/** Input tokens the fake charges for a request body: deterministic, varying with the request. */
export function fakeInputTokens(body: unknown): number {
  return 7 + Math.ceil(JSON.stringify(body).length / 16);
}

export interface FakeModelProviderOptions {
  /** The keys it accepts (default FAKE_OPENAI_KEY, FAKE_ANTHROPIC_KEY). */
  openaiKey?: string;
  anthropicKey?: string;
  /** The address it listens on (default 127.0.0.1); `0.0.0.0` lets customer containers call it directly, as an assistant with its own key calls its provider. */
  host?: string;
}

export async function startFakeModelProvider(options: FakeModelProviderOptions = {}): Promise<FakeModelProvider> {
  const openaiKey = options.openaiKey ?? FAKE_OPENAI_KEY;
  const anthropicKey = options.anthropicKey ?? FAKE_ANTHROPIC_KEY;
  const sockets = new Set<Socket>();
  const stalled: Array<() => void> = [];
  const state = {
    requests: [] as FakeModelRequest[],
    faults: [] as FakeFault[],
    reply: 'Hello from the fake model provider.',
    cachedInputTokens: 0,
    eventDelayMs: 0,
  };
  const server: Server = createServer((req, res) => {
    void handle(req, res).catch(() => res.destroy());
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const raw = await readBody(req);
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    const api: FakeApi | 'other' =
      req.method === 'POST' && path === '/v1/chat/completions'
        ? 'openai-chat'
        : req.method === 'POST' && path === '/v1/responses'
          ? 'openai-responses'
          : req.method === 'POST' && path === '/v1/messages'
            ? 'anthropic-messages'
            : 'other';
    let body: unknown;
    try {
      body = raw.length > 0 ? JSON.parse(raw) : undefined;
    } catch {
      body = raw;
    }
    const streamed = isObject(body) && body['stream'] === true;
    const record: FakeModelRequest = { api, method: req.method ?? 'GET', path, headers: req.headers, body, streamed };
    state.requests.push(record);
    const anthropic = path.startsWith('/v1/messages');

    if (api === 'other') {
      sendError(res, anthropic, 404, 'not_found_error', 'Not Found');
      return;
    }
    // Keys as the real APIs take them.
    if (anthropic) {
      if (req.headers['x-api-key'] !== anthropicKey) {
        sendError(res, true, 401, 'authentication_error', 'invalid x-api-key');
        return;
      }
      if (!req.headers['anthropic-version']) {
        sendError(res, true, 400, 'invalid_request_error', 'anthropic-version: header is required');
        return;
      }
    } else if (req.headers['authorization'] !== `Bearer ${openaiKey}`) {
      sendError(res, false, 401, 'invalid_request_error', 'Incorrect API key provided.', 'invalid_api_key');
      return;
    }
    const fault = state.faults.shift();
    if (fault === 'hold') await new Promise<void>((resolve) => stalled.push(resolve));
    if (fault === 'reset') {
      req.socket.destroy();
      return;
    }
    if (typeof fault === 'object') {
      if (fault.body !== undefined) {
        res.writeHead(fault.status, { 'content-type': 'application/json', ...fault.headers }).end(JSON.stringify(fault.body));
      } else {
        const type = anthropic
          ? fault.status === 529
            ? 'overloaded_error'
            : fault.status === 429
              ? 'rate_limit_error'
              : 'api_error'
          : 'server_error';
        sendError(res, anthropic, fault.status, type, `fake ${fault.status}`, null, fault.headers);
      }
      return;
    }
    if (!isObject(body) || typeof body['model'] !== 'string') {
      sendError(res, anthropic, 400, 'invalid_request_error', 'model: field required');
      return;
    }
    const model = body['model'];
    const words = state.reply.split(/(?<= )/);
    const usage: FakeUsage = {
      inputTokens: fakeInputTokens(body),
      cachedInputTokens: state.cachedInputTokens,
      outputTokens: words.length,
    };
    const id = randomBytes(8).toString('hex');
    const requestId = `req_${id}`;
    if (!streamed) {
      record.usage = usage;
      res
        .writeHead(200, { 'content-type': 'application/json', 'x-request-id': requestId, 'request-id': requestId })
        .end(JSON.stringify(jsonAnswer(api, id, model, state.reply, usage)));
      return;
    }
    const events = streamEvents(api, id, model, words, usage, wantsUsage(api, body));
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      'x-request-id': requestId,
      'request-id': requestId,
    });
    for (const [i, event] of events.entries()) {
      if (res.destroyed) return;
      res.write(event);
      if (i === 0 && fault === 'cut') {
        res.destroy();
        return;
      }
      if (i === 0 && fault === 'stall') await new Promise<void>((resolve) => stalled.push(resolve));
      if (state.eventDelayMs > 0) await new Promise((r) => setTimeout(r, state.eventDelayMs));
    }
    // Usage is reported once the whole stream went out: a client that left early still got it sent.
    if (wantsUsage(api, body)) record.usage = usage;
    res.end();
  }

  await new Promise<void>((resolve) => server.listen(0, options.host ?? '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return Object.assign(state, {
    url: `http://127.0.0.1:${port}`,
    port,
    reported(api?: FakeApi): FakeUsage {
      const total: FakeUsage = { inputTokens: 0, cachedInputTokens: 0, outputTokens: 0 };
      for (const r of state.requests) {
        if (!r.usage || (api && r.api !== api)) continue;
        total.inputTokens += r.usage.inputTokens;
        total.cachedInputTokens += r.usage.cachedInputTokens;
        total.outputTokens += r.usage.outputTokens;
      }
      return total;
    },
    releaseStalls() {
      for (const release of stalled.splice(0)) release();
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const release of stalled.splice(0)) release();
        server.close(() => resolve());
        for (const socket of sockets) socket.destroy();
      }),
  });
}

/** Chat completions report usage in a stream only when asked (stream_options.include_usage). */
function wantsUsage(api: FakeApi, body: Record<string, unknown>): boolean {
  if (api !== 'openai-chat') return true;
  const options = body['stream_options'];
  return isObject(options) && options['include_usage'] === true;
}

function jsonAnswer(api: FakeApi, id: string, model: string, text: string, usage: FakeUsage): unknown {
  const created = Math.floor(Date.now() / 1000);
  switch (api) {
    case 'openai-chat':
      return {
        id: `chatcmpl-${id}`,
        object: 'chat.completion',
        created,
        model,
        choices: [
          { index: 0, message: { role: 'assistant', content: text, refusal: null }, logprobs: null, finish_reason: 'stop' },
        ],
        usage: openAiChatUsage(usage),
      };
    case 'openai-responses':
      return responseObject(id, model, created, 'completed', text, usage);
    case 'anthropic-messages':
      return {
        id: `msg_${id}`,
        type: 'message',
        role: 'assistant',
        model,
        content: [{ type: 'text', text }],
        stop_reason: 'end_turn',
        stop_sequence: null,
        usage: anthropicUsage(usage, usage.outputTokens),
      };
  }
}

function openAiChatUsage(usage: FakeUsage) {
  return {
    prompt_tokens: usage.inputTokens,
    completion_tokens: usage.outputTokens,
    total_tokens: usage.inputTokens + usage.outputTokens,
    prompt_tokens_details: { cached_tokens: usage.cachedInputTokens, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: 0,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
}

/** Anthropic splits input: uncached, cache writes (none here) and cache reads. */
function anthropicUsage(usage: FakeUsage, outputTokens: number) {
  return {
    input_tokens: usage.inputTokens - usage.cachedInputTokens,
    cache_creation_input_tokens: 0,
    cache_read_input_tokens: usage.cachedInputTokens,
    output_tokens: outputTokens,
  };
}

function responseObject(id: string, model: string, created: number, status: string, text: string, usage?: FakeUsage) {
  return {
    id: `resp_${id}`,
    object: 'response',
    created_at: created,
    status,
    model,
    output: text
      ? [
          {
            type: 'message',
            id: `msg_${id}`,
            status: 'completed',
            role: 'assistant',
            content: [{ type: 'output_text', text, annotations: [] }],
          },
        ]
      : [],
    usage: usage
      ? {
          input_tokens: usage.inputTokens,
          input_tokens_details: { cached_tokens: usage.cachedInputTokens },
          output_tokens: usage.outputTokens,
          output_tokens_details: { reasoning_tokens: 0 },
          total_tokens: usage.inputTokens + usage.outputTokens,
        }
      : null,
  };
}

function sse(data: unknown, event?: string): string {
  return `${event ? `event: ${event}\n` : ''}data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`;
}

function streamEvents(
  api: FakeApi,
  id: string,
  model: string,
  words: string[],
  usage: FakeUsage,
  includeUsage: boolean,
): string[] {
  const created = Math.floor(Date.now() / 1000);
  const text = words.join('');
  switch (api) {
    case 'openai-chat': {
      const chunk = (delta: unknown, finish: string | null) => ({
        id: `chatcmpl-${id}`,
        object: 'chat.completion.chunk',
        created,
        model,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
        ...(includeUsage ? { usage: null } : {}),
      });
      const events = [sse(chunk({ role: 'assistant', content: '', refusal: null }, null))];
      for (const word of words) events.push(sse(chunk({ content: word }, null)));
      events.push(sse(chunk({}, 'stop')));
      if (includeUsage) {
        events.push(
          sse({
            id: `chatcmpl-${id}`,
            object: 'chat.completion.chunk',
            created,
            model,
            choices: [],
            usage: openAiChatUsage(usage),
          }),
        );
      }
      events.push(sse('[DONE]'));
      return events;
    }
    case 'openai-responses': {
      let seq = 0;
      const ev = (type: string, rest: Record<string, unknown>) => sse({ type, sequence_number: seq++, ...rest }, type);
      const events = [
        ev('response.created', { response: responseObject(id, model, created, 'in_progress', '') }),
        ev('response.in_progress', { response: responseObject(id, model, created, 'in_progress', '') }),
        ev('response.output_item.added', {
          output_index: 0,
          item: { type: 'message', id: `msg_${id}`, status: 'in_progress', role: 'assistant', content: [] },
        }),
        ev('response.content_part.added', {
          item_id: `msg_${id}`,
          output_index: 0,
          content_index: 0,
          part: { type: 'output_text', text: '', annotations: [] },
        }),
      ];
      for (const word of words) {
        events.push(ev('response.output_text.delta', { item_id: `msg_${id}`, output_index: 0, content_index: 0, delta: word }));
      }
      events.push(
        ev('response.output_text.done', { item_id: `msg_${id}`, output_index: 0, content_index: 0, text }),
        ev('response.content_part.done', {
          item_id: `msg_${id}`,
          output_index: 0,
          content_index: 0,
          part: { type: 'output_text', text, annotations: [] },
        }),
        ev('response.output_item.done', {
          output_index: 0,
          item: {
            type: 'message',
            id: `msg_${id}`,
            status: 'completed',
            role: 'assistant',
            content: [{ type: 'output_text', text, annotations: [] }],
          },
        }),
        ev('response.completed', { response: responseObject(id, model, created, 'completed', text, usage) }),
      );
      return events;
    }
    case 'anthropic-messages': {
      const events = [
        sse(
          {
            type: 'message_start',
            message: {
              id: `msg_${id}`,
              type: 'message',
              role: 'assistant',
              model,
              content: [],
              stop_reason: null,
              stop_sequence: null,
              usage: anthropicUsage(usage, 1),
            },
          },
          'message_start',
        ),
        sse({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }, 'content_block_start'),
        sse({ type: 'ping' }, 'ping'),
      ];
      for (const word of words) {
        events.push(
          sse({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: word } }, 'content_block_delta'),
        );
      }
      events.push(
        sse({ type: 'content_block_stop', index: 0 }, 'content_block_stop'),
        sse(
          {
            type: 'message_delta',
            delta: { stop_reason: 'end_turn', stop_sequence: null },
            usage: { output_tokens: usage.outputTokens },
          },
          'message_delta',
        ),
        sse({ type: 'message_stop' }, 'message_stop'),
      );
      return events;
    }
  }
}

function sendError(
  res: ServerResponse,
  anthropic: boolean,
  status: number,
  type: string,
  message: string,
  code: string | null = null,
  headers: Record<string, string> = {},
): void {
  const body = anthropic
    ? { type: 'error', error: { type, message }, request_id: `req_${randomBytes(6).toString('hex')}` }
    : { error: { message, type, param: null, code } };
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}
