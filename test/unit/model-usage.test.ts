import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SseReader } from '../../src/model-providers/sse.js';
import { createUsageMeter, usageOfJson, type ModelApi } from '../../src/model-providers/usage.js';

/**
 * Metering reads usage from the provider's own answers: JSON and streamed (SSE), for OpenAI chat
 * completions, OpenAI responses and Anthropic messages. The fixtures are the wire formats as the
 * providers document and send them.
 */

const sse = (data: unknown, event?: string) =>
  `${event ? `event: ${event}\n` : ''}data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`;

const OPENAI_CHAT_STREAM = [
  sse({
    id: 'c1',
    object: 'chat.completion.chunk',
    choices: [{ index: 0, delta: { role: 'assistant', content: '' } }],
    usage: null,
  }),
  sse({ id: 'c1', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'Hé, ' } }], usage: null }),
  sse({ id: 'c1', object: 'chat.completion.chunk', choices: [{ index: 0, delta: { content: 'wörld' } }], usage: null }),
  sse({ id: 'c1', object: 'chat.completion.chunk', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }], usage: null }),
  sse({
    id: 'c1',
    object: 'chat.completion.chunk',
    choices: [],
    usage: { prompt_tokens: 1234, completion_tokens: 56, total_tokens: 1290, prompt_tokens_details: { cached_tokens: 1024 } },
  }),
  sse('[DONE]'),
].join('');

const OPENAI_RESPONSES_STREAM = [
  sse(
    { type: 'response.created', sequence_number: 0, response: { id: 'r1', status: 'in_progress', usage: null } },
    'response.created',
  ),
  sse({ type: 'response.output_text.delta', sequence_number: 1, delta: 'Hi' }, 'response.output_text.delta'),
  sse(
    {
      type: 'response.completed',
      sequence_number: 2,
      response: {
        id: 'r1',
        status: 'completed',
        usage: {
          input_tokens: 800,
          input_tokens_details: { cached_tokens: 300 },
          output_tokens: 42,
          output_tokens_details: { reasoning_tokens: 30 },
          total_tokens: 842,
        },
      },
    },
    'response.completed',
  ),
].join('');

const ANTHROPIC_STREAM = [
  sse(
    {
      type: 'message_start',
      message: {
        id: 'm1',
        type: 'message',
        role: 'assistant',
        content: [],
        usage: { input_tokens: 25, cache_creation_input_tokens: 100, cache_read_input_tokens: 2000, output_tokens: 1 },
      },
    },
    'message_start',
  ),
  sse({ type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } }, 'content_block_start'),
  sse({ type: 'ping' }, 'ping'),
  ': keep-alive comment\n\n',
  sse({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: 'Hello' } }, 'content_block_delta'),
  sse({ type: 'content_block_stop', index: 0 }, 'content_block_stop'),
  sse({ type: 'message_delta', delta: { stop_reason: 'end_turn' }, usage: { output_tokens: 77 } }, 'message_delta'),
  sse({ type: 'message_stop' }, 'message_stop'),
].join('');

const STREAMS: Array<[ModelApi, string, { inputTokens: number; cachedInputTokens: number; outputTokens: number }]> = [
  ['openai-chat', OPENAI_CHAT_STREAM, { inputTokens: 1234, cachedInputTokens: 1024, outputTokens: 56 }],
  ['openai-responses', OPENAI_RESPONSES_STREAM, { inputTokens: 800, cachedInputTokens: 300, outputTokens: 42 }],
  ['anthropic-messages', ANTHROPIC_STREAM, { inputTokens: 2125, cachedInputTokens: 2000, outputTokens: 77 }],
];

function meterOf(api: ModelApi, streamed: boolean, chunks: Buffer[]) {
  const meter = createUsageMeter(api, streamed);
  for (const chunk of chunks) meter.push(chunk);
  return meter.finish();
}

/** The bytes cut at the given offsets (any offsets: mid-line, mid-UTF-8 character, mid-event). */
function cut(bytes: Buffer, offsets: number[]): Buffer[] {
  const points = [...new Set(offsets.map((o) => o % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Buffer[] = [];
  let last = 0;
  for (const p of [...points, bytes.length]) {
    chunks.push(bytes.subarray(last, p));
    last = p;
  }
  return chunks;
}

describe('streamed usage', () => {
  for (const [api, stream, expected] of STREAMS) {
    it(`${api}: read from the provider's usage events`, () => {
      expect(meterOf(api, true, [Buffer.from(stream)])).toEqual(expected);
    });

    it(`${api}: the same however the bytes are chunked`, () => {
      const bytes = Buffer.from(stream);
      fc.assert(
        fc.property(fc.array(fc.nat(), { maxLength: 40 }), (offsets) => {
          expect(meterOf(api, true, cut(bytes, offsets))).toEqual(expected);
        }),
      );
    });

    it(`${api}: with CRLF line ends`, () => {
      expect(meterOf(api, true, [Buffer.from(stream.replace(/\n/g, '\r\n'))])).toEqual(expected);
    });

    it(`${api}: the same without event names (data lines only)`, () => {
      expect(meterOf(api, true, [Buffer.from(stream.replace(/^event: .*\n/gm, ''))])).toEqual(expected);
    });

    it(`${api}: a stream cut before its usage event reports none`, () => {
      const usageAt =
        api === 'openai-chat'
          ? stream.indexOf('"prompt_tokens"')
          : api === 'openai-responses'
            ? stream.indexOf('response.completed')
            : stream.indexOf('message_start');
      expect(meterOf(api, true, [Buffer.from(stream.slice(0, Math.max(0, usageAt - 20)))])).toBeUndefined();
    });
  }

  it('anthropic: message_start usage stands when the stream breaks before message_delta', () => {
    const partial = ANTHROPIC_STREAM.slice(0, ANTHROPIC_STREAM.indexOf('event: message_delta'));
    expect(meterOf('anthropic-messages', true, [Buffer.from(partial)])).toEqual({
      inputTokens: 2125,
      cachedInputTokens: 2000,
      outputTokens: 1,
    });
  });

  it('openai chat: a stream without include_usage has no usage', () => {
    const withoutUsage = OPENAI_CHAT_STREAM.split('\n\n')
      .filter((e) => !e.includes('prompt_tokens'))
      .join('\n\n');
    expect(meterOf('openai-chat', true, [Buffer.from(withoutUsage)])).toBeUndefined();
  });
});

describe('JSON usage', () => {
  it('openai chat completions', () => {
    const body = {
      id: 'c',
      object: 'chat.completion',
      choices: [],
      usage: { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 },
    };
    expect(usageOfJson('openai-chat', body)).toEqual({ inputTokens: 10, cachedInputTokens: 0, outputTokens: 5 });
    expect(meterOf('openai-chat', false, cut(Buffer.from(JSON.stringify(body)), [3, 17, 40]))).toEqual({
      inputTokens: 10,
      cachedInputTokens: 0,
      outputTokens: 5,
    });
  });

  it('openai responses', () => {
    const body = {
      id: 'r',
      object: 'response',
      usage: { input_tokens: 9, input_tokens_details: { cached_tokens: 4 }, output_tokens: 3, total_tokens: 12 },
    };
    expect(usageOfJson('openai-responses', body)).toEqual({ inputTokens: 9, cachedInputTokens: 4, outputTokens: 3 });
  });

  it('anthropic messages: cache writes and reads are input too', () => {
    const body = {
      id: 'm',
      type: 'message',
      usage: { input_tokens: 5, cache_creation_input_tokens: 7, cache_read_input_tokens: 11, output_tokens: 13 },
    };
    expect(usageOfJson('anthropic-messages', body)).toEqual({ inputTokens: 23, cachedInputTokens: 11, outputTokens: 13 });
  });

  it('counts that are not non-negative integers are no usage', () => {
    for (const usage of [
      { prompt_tokens: -1, completion_tokens: 5 },
      { prompt_tokens: 1.5, completion_tokens: 5 },
      { prompt_tokens: '10', completion_tokens: 5 },
      {},
    ]) {
      expect(usageOfJson('openai-chat', { usage })).toBeUndefined();
    }
    expect(meterOf('openai-chat', false, [Buffer.from('not json')])).toBeUndefined();
  });
});

describe('SseReader', () => {
  it('joins multi-line data, names events, skips comments, ignores id and retry', () => {
    const reader = new SseReader();
    const events = reader.push('id: 1\nretry: 10\nevent: a\ndata: x\ndata:y\n\n: comment\ndata: z\n\n');
    expect(events).toEqual([
      { event: 'a', data: 'x\ny' },
      { event: 'message', data: 'z' },
    ]);
  });

  it('a lone CR ending one chunk and LF starting the next are one line end', () => {
    const reader = new SseReader();
    expect([...reader.push('data: a\r'), ...reader.push('\n\r\n')]).toEqual([{ event: 'message', data: 'a' }]);
  });

  it('any chunking yields the same events (property)', () => {
    const text = 'event: e1\r\ndata: {"a":"é"}\r\n\r\ndata: 2\n\n: c\n\rdata: 3\r\r';
    const whole = new SseReader().push(Buffer.from(text));
    fc.assert(
      fc.property(fc.array(fc.nat(), { maxLength: 20 }), (offsets) => {
        const reader = new SseReader();
        const events = cut(Buffer.from(text), offsets).flatMap((c) => reader.push(c));
        expect(events).toEqual(whole);
      }),
    );
  });
});
