import type { ModelApi } from './usage.js';

/**
 * The provider APIs the model gateway speaks, and the answers it gives itself in each one's own
 * error format, so the assistant's SDK (OpenAI's or Anthropic's, inside OpenClaw) reads a refusal
 * from the gateway exactly as it would read the provider's: same status, same body shape, same
 * error type. Pure.
 */

export const PROVIDERS = ['openai', 'anthropic'] as const;
export type Provider = (typeof PROVIDERS)[number];

export interface GatewayRoute {
  api: ModelApi;
  provider: Provider;
  /** The provider's own path for it. */
  upstreamPath: string;
}

/**
 * What the gateway serves. The prefix names the provider, so an OpenClaw provider's `baseUrl` is
 * `<gateway>/openai/v1` (the OpenAI SDK appends `/chat/completions`) or `<gateway>/anthropic`
 * (the Anthropic SDK appends `/v1/messages`). Nothing else is forwarded: with the platform's key
 * any other endpoint (files, batches, stored responses, fine-tuning) would reach beyond the
 * customer's own requests, or spend without usage the gateway can meter.
 */
const ROUTES: Readonly<Record<string, GatewayRoute>> = {
  '/openai/v1/chat/completions': { api: 'openai-chat', provider: 'openai', upstreamPath: '/v1/chat/completions' },
  '/openai/v1/responses': { api: 'openai-responses', provider: 'openai', upstreamPath: '/v1/responses' },
  '/anthropic/v1/messages': { api: 'anthropic-messages', provider: 'anthropic', upstreamPath: '/v1/messages' },
};

/** `GET <prefix>/v1/models`: answered by the gateway itself with the models it allows. */
export function modelListRoute(method: string, path: string): Provider | undefined {
  if (method !== 'GET') return undefined;
  if (path === '/openai/v1/models') return 'openai';
  if (path === '/anthropic/v1/models') return 'anthropic';
  return undefined;
}

export function routeOf(method: string, path: string): GatewayRoute | undefined {
  return method === 'POST' ? ROUTES[path] : undefined;
}

/** Which provider's error format fits a path the gateway does not serve (OpenAI's by default). */
export function providerOfPath(path: string): Provider {
  return path.startsWith('/anthropic/') ? 'anthropic' : 'openai';
}

/** An answer made by the gateway: status, extra headers and a JSON body in the provider's format. */
export interface GatewayAnswer {
  status: number;
  headers?: Record<string, string>;
  body: unknown;
}

interface ErrorSpec {
  status: number;
  openai: { type: string; code: string | null; message: string };
  anthropic: { type: string; message: string };
  headers?: Record<string, string>;
}

function answer(provider: Provider, spec: ErrorSpec): GatewayAnswer {
  const body =
    provider === 'openai'
      ? { error: { message: spec.openai.message, type: spec.openai.type, param: null, code: spec.openai.code } }
      : { type: 'error', error: { type: spec.anthropic.type, message: spec.anthropic.message } };
  return { status: spec.status, ...(spec.headers ? { headers: spec.headers } : {}), body };
}

/** No credential, an unknown one, or one of a customer that is not active (suspended, cancelled). */
export function unauthorized(provider: Provider): GatewayAnswer {
  return answer(provider, {
    status: 401,
    openai: {
      type: 'invalid_request_error',
      code: 'invalid_api_key',
      message: 'Incorrect API key provided. This Blytz model key is unknown or revoked.',
    },
    anthropic: { type: 'authentication_error', message: 'invalid x-api-key' },
  });
}

/** A valid credential sent from somewhere other than its customer's own container. */
export function wrongSource(provider: Provider): GatewayAnswer {
  const message = 'This Blytz model key may only be used by the assistant it was issued to.';
  return answer(provider, {
    status: 403,
    openai: { type: 'invalid_request_error', code: 'forbidden', message },
    anthropic: { type: 'permission_error', message },
  });
}

/**
 * The month's budget is spent: OpenAI's exhausted quota (429 insufficient_quota, which its SDK
 * does not retry) and Anthropic's reached usage limit (400 invalid_request_error with the date
 * access returns), so the assistant reports a quota problem instead of retrying or failing silently.
 *
 * The Anthropic message says the limit is monthly, in OpenClaw's words ("monthly usage limit"):
 * OpenClaw 2026.9.6 takes "usage limit" for a rate limit, and retries one for about two minutes
 * (ten attempts, backing off to 30 s each) unless the text shows a long window ("monthly", "per
 * day", ...); Anthropic's own wording ("usage limits") does not, so the user waited two minutes for
 * an answer that could not change before the month ends. With "monthly usage limit" it answers at
 * once, relaying this message (the date included) to the user.
 */
export function quotaExceeded(provider: Provider, renewsAt: Date): GatewayAnswer {
  const day = renewsAt.toISOString().slice(0, 10);
  return answer(provider, {
    status: provider === 'openai' ? 429 : 400,
    openai: {
      type: 'insufficient_quota',
      code: 'insufficient_quota',
      message: `You exceeded your current quota: this assistant's included model usage for the month is used up. It renews on ${day} at 00:00 UTC.`,
    },
    anthropic: {
      type: 'invalid_request_error',
      message: `You have reached your specified API usage limits: this assistant's monthly usage limit is used up. You will regain access on ${day} at 00:00 UTC.`,
    },
  });
}

export function modelNotAllowed(provider: Provider, model: string): GatewayAnswer {
  return answer(provider, {
    status: 404,
    openai: {
      type: 'invalid_request_error',
      code: 'model_not_found',
      message: `The model \`${model}\` does not exist or you do not have access to it.`,
    },
    anthropic: { type: 'not_found_error', message: `model: ${model}` },
  });
}

export function notFound(provider: Provider, method: string, path: string): GatewayAnswer {
  return answer(provider, {
    status: 404,
    openai: { type: 'invalid_request_error', code: null, message: `Invalid URL (${method} ${path})` },
    anthropic: { type: 'not_found_error', message: 'Not Found' },
  });
}

export function badRequest(provider: Provider, message: string): GatewayAnswer {
  return answer(provider, {
    status: 400,
    openai: { type: 'invalid_request_error', code: null, message },
    anthropic: { type: 'invalid_request_error', message },
  });
}

export function tooLarge(provider: Provider, limitBytes: number): GatewayAnswer {
  const message = `Request body is larger than ${limitBytes} bytes.`;
  return answer(provider, {
    status: 413,
    openai: { type: 'invalid_request_error', code: null, message },
    anthropic: { type: 'request_too_large', message },
  });
}

/** Too many requests of one customer in flight at once. */
export function tooManyInFlight(provider: Provider, limit: number): GatewayAnswer {
  const message = `Too many concurrent requests: at most ${limit} at once per assistant.`;
  return answer(provider, {
    status: 429,
    headers: { 'retry-after': '1' },
    openai: { type: 'requests', code: 'rate_limit_exceeded', message },
    anthropic: { type: 'rate_limit_error', message },
  });
}

/**
 * The provider could not be reached (or its breaker is open after repeated failures): a 503 in
 * the provider's format, which both SDKs retry with their own back-off.
 */
export function providerUnavailable(provider: Provider, why: string): GatewayAnswer {
  const message = `The model provider is unavailable (${why}). Try again shortly.`;
  return answer(provider, {
    status: 503,
    headers: { 'retry-after': '5' },
    openai: { type: 'server_error', code: null, message },
    anthropic: { type: 'api_error', message },
  });
}

/** `GET /v1/models` in the provider's list format, listing only the models the gateway allows. */
export function modelList(provider: Provider, models: readonly string[]): GatewayAnswer {
  if (provider === 'openai') {
    return {
      status: 200,
      body: { object: 'list', data: models.map((id) => ({ id, object: 'model', created: 0, owned_by: 'blytz' })) },
    };
  }
  return {
    status: 200,
    body: {
      data: models.map((id) => ({ type: 'model', id, display_name: id, created_at: '1970-01-01T00:00:00Z' })),
      has_more: false,
      first_id: models[0] ?? null,
      last_id: models.at(-1) ?? null,
    },
  };
}
