import { Agent as HttpAgent, request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import type { Provider } from './provider-apis.js';

/**
 * The platform's connection to one model provider: its base URL and the platform's API key,
 * which is put on the outgoing request here and nowhere else (never in a container, a log, a
 * file or an answer). Plain node:http(s) with keep-alive, so a streamed answer is passed on
 * chunk by chunk as it arrives, with no buffering in between.
 */

export interface UpstreamSettings {
  /** e.g. https://api.openai.com (paths are the provider's own: /v1/chat/completions). */
  baseUrl: string;
  apiKey: string;
}

/** The provider answered with a server failure (5xx): relayed to the caller, counted by the breaker. */
export class ProviderFailure extends Error {
  readonly statusCode: number;
  constructor(readonly response: IncomingMessage) {
    super(`provider answered ${response.statusCode}`);
    this.name = 'ProviderFailure';
    this.statusCode = response.statusCode ?? 500;
  }
}

/**
 * Request headers passed on from the assistant's SDK: the API version and feature flags the
 * request is written for, and the client's name. Everything else (its credential, cookies,
 * forwarding headers, organisation or project selectors) stays behind.
 */
const FORWARDED_REQUEST_HEADERS = ['accept', 'user-agent', 'anthropic-version', 'anthropic-beta', 'openai-beta'];

/** Anthropic requires an API version; the one its SDKs send. */
const DEFAULT_ANTHROPIC_VERSION = '2023-06-01';

/**
 * Response headers not passed back: hop-by-hop ones (the gateway frames its own answer), the
 * platform account's identity and its aggregate rate-limit state (one customer need not see the
 * whole platform's), cookies. Retry hints (retry-after, x-should-retry) and request ids pass.
 */
export function passesBack(header: string): boolean {
  const name = header.toLowerCase();
  if (['connection', 'keep-alive', 'transfer-encoding', 'content-length', 'content-encoding', 'set-cookie'].includes(name))
    return false;
  if (name === 'openai-organization' || name === 'openai-project' || name === 'anthropic-organization-id') return false;
  if (name.startsWith('x-ratelimit-') || name.startsWith('anthropic-ratelimit-')) return false;
  return true;
}

export class Upstream {
  readonly #url: URL;
  readonly #apiKey: string;
  readonly #agent: HttpAgent;
  readonly #request: typeof httpRequest;

  constructor(
    readonly provider: Provider,
    settings: UpstreamSettings,
    options: { maxSockets?: number } = {},
  ) {
    this.#url = new URL(settings.baseUrl);
    this.#apiKey = settings.apiKey;
    const https = this.#url.protocol === 'https:';
    const agentOptions = { keepAlive: true, maxSockets: options.maxSockets ?? 256, scheduling: 'lifo' as const };
    this.#agent = https ? new HttpsAgent(agentOptions) : new HttpAgent(agentOptions);
    this.#request = https ? (httpsRequest as unknown as typeof httpRequest) : httpRequest;
  }

  /**
   * Sends one request; resolves with the provider's answer once its headers are in (the body
   * still to be read), rejects with the network error if none came. `signal` aborts it.
   */
  send(
    path: string,
    body: Buffer,
    clientHeaders: IncomingHttpHeaders,
    signal: AbortSignal,
    idleTimeoutMs: number,
  ): Promise<IncomingMessage> {
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      'content-length': String(body.length),
      // The gateway reads usage from the body as it passes: no compression in between.
      'accept-encoding': 'identity',
    };
    for (const name of FORWARDED_REQUEST_HEADERS) {
      const value = clientHeaders[name];
      if (typeof value === 'string' && value.length <= 512) headers[name] = value;
    }
    if (this.provider === 'anthropic') {
      headers['anthropic-version'] ??= DEFAULT_ANTHROPIC_VERSION;
      headers['x-api-key'] = this.#apiKey;
    } else {
      headers['authorization'] = `Bearer ${this.#apiKey}`;
    }
    const url = new URL(this.#url.pathname.replace(/\/+$/, '') + path, this.#url);
    return new Promise((resolve, reject) => {
      const req = this.#request(url, { method: 'POST', headers, agent: this.#agent, signal }, resolve);
      // A provider silent for this long (no header, no byte) is cut off rather than held forever;
      // the request's own timeout listener is taken off the socket when the exchange ends.
      req.setTimeout(idleTimeoutMs, () => req.destroy(new Error(`no data from the provider for ${idleTimeoutMs} ms`)));
      req.on('error', reject);
      req.end(body);
    });
  }

  close(): void {
    this.#agent.destroy();
  }
}
