import { randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../observability/logger.js';
import type { Metrics } from '../observability/metrics.js';
import { CircuitOpenError, DependencyError, type Guard } from '../resilience/guard.js';
import type { MeteredRequest, ModelAccessStore, ModelCaller } from '../store/model-access-store.js';
import { decide, periodKey, type ModelBudget } from '../domain/model-budget.js';
import { isCredentialShaped } from '../store/model-credential.js';
import {
  badRequest,
  modelList,
  modelListRoute,
  modelNotAllowed,
  notFound,
  providerOfPath,
  providerUnavailable,
  quotaExceeded,
  routeOf,
  tooLarge,
  tooManyInFlight,
  unauthorized,
  wrongSource,
  type GatewayAnswer,
  type GatewayRoute,
  type Provider,
} from '../model-providers/provider-apis.js';
import type { SourceCheck } from '../runtime/customer-addresses.js';
import { passesBack, ProviderFailure, type Upstream } from '../model-providers/upstream.js';
import { createUsageMeter, type Usage } from '../model-providers/usage.js';

/**
 * The model gateway: the one way customer assistants reach a model on the platform's account.
 * Its own listener (never the public HTTP app), reachable from customer containers only.
 *
 * Per request, in order:
 *   1. route: only the endpoints the gateway meters (model-providers/provider-apis.ts); anything else 404;
 *   2. credential (Authorization: Bearer or x-api-key) -> its customer, who must be active and
 *      not on their own key (one store query, which also returns this month's usage);
 *   3. source: the request must come from that customer's own container (runtime/customer-addresses.ts);
 *   4. in flight: at most maxInFlightPerCustomer, counted before the body is read;
 *      body: JSON (nested at most MAX_JSON_DEPTH deep), an allowed model, no background mode; OpenAI chat streams get
 *      stream_options.include_usage so the provider reports usage at the end;
 *   5. budget: past the plan's monthly limit the provider's own quota answer (domain/model-budget.ts);
 *   6. forward with the platform's key, through the provider's breaker; the answer streams back
 *      chunk by chunk, errors relayed as the provider sent them, while the usage meter reads
 *      the provider's usage fields from the bytes going by;
 *   7. record the usage once, keyed by this request's id (retried writes count once).
 *
 * A customer who leaves mid-stream does not end the upstream request: the rest is read (and
 * discarded) so the usage the provider reports at the end is still metered.
 */

export interface ModelGatewayOptions {
  store: Pick<ModelAccessStore, 'authenticate' | 'record'>;
  /** One per provider the platform has a key for. */
  upstreams: Partial<Record<Provider, Upstream>>;
  /** The provider's breaker (policies.guard('openai' | 'anthropic')). */
  guards: Record<Provider, Guard>;
  sources: SourceCheck;
  /** Monthly budget by plan name. */
  budgets: Readonly<Record<string, ModelBudget>>;
  /** Model ids each provider may be asked for. */
  allowedModels: Readonly<Record<Provider, readonly string[]>>;
  metrics?: Pick<Metrics, 'modelRequests' | 'modelTokens' | 'modelInFlight'>;
  logger: Logger;
  /** Requests one customer may have in flight at once. Default 8. */
  maxInFlightPerCustomer?: number;
  /** Largest request body. Default 20 MiB (images travel inline). */
  maxBodyBytes?: number;
  /** Called after usage was recorded (the Stripe reporter looks for overage). */
  onRecorded?: (overageTokens: number) => void;
  now?: () => Date;
}

/** Headers timeout for a streamed answer (first event), and for a whole JSON answer. */
const STREAM_HEADERS_TIMEOUT_MS = 120_000;
const JSON_ANSWER_TIMEOUT_MS = 600_000;
const RECORD_ATTEMPTS = 6;

type Outcome =
  | 'ok'
  | 'provider_error'
  | 'quota_exceeded'
  | 'unauthorized'
  | 'wrong_source'
  | 'refused'
  | 'unavailable'
  | 'usage_missing'
  | 'unrecorded';

export class ModelGateway {
  readonly #options: ModelGatewayOptions;
  readonly #inFlight = new Map<string, number>();
  readonly #maxInFlight: number;
  readonly #maxBody: number;
  readonly #now: () => Date;
  /** Usage writes still being retried, awaited by close(). */
  readonly #pendingWrites = new Set<Promise<void>>();
  #server: Server | undefined;

  constructor(options: ModelGatewayOptions) {
    this.#options = options;
    this.#maxInFlight = options.maxInFlightPerCustomer ?? 8;
    this.#maxBody = options.maxBodyBytes ?? 20 * 1024 * 1024;
    this.#now = options.now ?? (() => new Date());
  }

  /** Starts the gateway's own listener; resolves with its address. */
  async listen(host: string, port: number): Promise<AddressInfo> {
    const server = createServer((req, res) => this.handle(req, res));
    // Streams run for minutes; the provider's own idle limit applies (model-providers/upstream.ts), not Node's defaults.
    server.requestTimeout = 0;
    server.headersTimeout = 10_000;
    server.keepAliveTimeout = 5_000;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#server = server;
    return server.address() as AddressInfo;
  }

  /** Stops accepting, lets streams in flight finish (up to `drainMs`), then waits for their usage writes. */
  async close(drainMs = 10_000): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (server) {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
        setTimeout(() => server.closeAllConnections(), drainMs).unref();
      });
    }
    await Promise.allSettled([...this.#pendingWrites]);
  }

  readonly handle = (req: IncomingMessage, res: ServerResponse): void => {
    void this.#handle(req, res).catch((error: unknown) => {
      this.#options.logger.error({ err: error }, 'model gateway: unexpected failure');
      if (!res.headersSent) send(res, providerUnavailable(providerOfPath(req.url ?? '/'), 'gateway error'));
      else res.destroy();
    });
  };

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const method = req.method ?? 'GET';
    // GET <provider>/v1/models is answered here, for callers who pass the same checks.
    const listed = modelListRoute(method, path);
    const route = listed ? undefined : routeOf(method, path);
    const provider = listed ?? route?.provider;
    if (!provider || !this.#options.upstreams[provider]) {
      send(res, notFound(providerOfPath(path), method, path));
      return;
    }
    const count = (outcome: Outcome) => {
      if (route) this.#options.metrics?.modelRequests.inc({ api: route.api, outcome });
    };

    const credential = credentialOf(req);
    const period = periodKey(this.#now());
    const caller =
      credential && isCredentialShaped(credential) ? await this.#options.store.authenticate(credential, period) : undefined;
    if (!caller) {
      count('unauthorized');
      send(res, unauthorized(provider));
      return;
    }
    let sourceAllowed: boolean;
    try {
      sourceAllowed = await this.#options.sources.allows(caller.customer, req.socket.remoteAddress);
    } catch (error) {
      this.#options.logger.warn({ err: error, customer: caller.customer }, 'model gateway: cannot list container addresses');
      count('unavailable');
      send(res, providerUnavailable(provider, 'the caller could not be verified'));
      return;
    }
    if (!sourceAllowed) {
      this.#options.logger.warn(
        { customer: caller.customer, remoteAddress: req.socket.remoteAddress },
        'model gateway: credential used from outside its container',
      );
      count('wrong_source');
      send(res, wrongSource(provider));
      return;
    }
    if (!route) {
      send(res, modelList(provider, this.#options.allowedModels[provider]));
      return;
    }
    const { api } = route;

    // Counted before the body is read: each body may be held whole (up to maxBodyBytes), so a
    // customer opening many uploads at once would otherwise fill the controller's memory and
    // take the gateway (and everything else in blytz serve) down for every customer.
    const inFlight = this.#inFlight.get(caller.customer) ?? 0;
    if (inFlight >= this.#maxInFlight) {
      count('refused');
      send(res, tooManyInFlight(provider, this.#maxInFlight));
      return;
    }
    this.#inFlight.set(caller.customer, inFlight + 1);
    this.#options.metrics?.modelInFlight.inc({ api });
    try {
      const raw = await readBody(req, this.#maxBody);
      if (raw === 'gone') return;
      if (raw === 'too-large') {
        count('refused');
        send(res, tooLarge(provider, this.#maxBody), true);
        return;
      }
      const prepared = prepareBody(route, raw, this.#options.allowedModels[provider]);
      if ('answer' in prepared) {
        count('refused');
        send(res, prepared.answer);
        return;
      }
      const budget = this.#options.budgets[caller.plan];
      const decision = budget ? decide(budget, caller.usedTokens, this.#now()) : undefined;
      if (!budget || !decision?.allowed) {
        count('quota_exceeded');
        send(res, quotaExceeded(provider, decision && !decision.allowed ? decision.renewsAt : this.#now()));
        return;
      }
      const outcome = await this.#forward(req, res, route, caller, budget, prepared, period);
      count(outcome);
    } finally {
      this.#options.metrics?.modelInFlight.dec({ api });
      const left = (this.#inFlight.get(caller.customer) ?? 1) - 1;
      if (left > 0) this.#inFlight.set(caller.customer, left);
      else this.#inFlight.delete(caller.customer);
    }
  }

  /** Forwards, relays the answer as it comes, meters it; resolves once the upstream answer is fully read. */
  async #forward(
    req: IncomingMessage,
    res: ServerResponse,
    route: GatewayRoute,
    caller: ModelCaller,
    budget: ModelBudget,
    prepared: PreparedBody,
    period: string,
  ): Promise<Outcome> {
    const { provider, api } = route;
    const upstream = this.#options.upstreams[provider] as Upstream;
    const requestId = randomUUID();
    const started = performance.now();
    const timeoutMs = prepared.streamed ? STREAM_HEADERS_TIMEOUT_MS : JSON_ANSWER_TIMEOUT_MS;
    let answer: IncomingMessage;
    try {
      answer = await this.#options.guards[provider](
        api,
        async (signal) => {
          const response = await upstream.send(route.upstreamPath, prepared.body, req.headers, signal, timeoutMs);
          // A server failure counts against the breaker, and is still relayed as it was sent.
          if ((response.statusCode ?? 500) >= 500) throw new ProviderFailure(response);
          return response;
        },
        { timeoutMs },
      );
    } catch (error) {
      const failure = providerFailureOf(error);
      if (failure) {
        answer = failure.response;
      } else {
        const why = error instanceof CircuitOpenError ? 'too many recent failures' : 'it did not answer';
        this.#options.logger.warn(
          { err: error, requestId, customer: caller.customer, api },
          'model gateway: provider unavailable',
        );
        send(res, providerUnavailable(provider, why));
        return 'unavailable';
      }
    }

    const status = answer.statusCode ?? 502;
    if (status === 401 || status === 403) {
      // The provider refused the platform's own key (revoked, out of credit, region): nothing the
      // customer's assistant can fix, and its SDK must not take it for its own key being wrong.
      answer.resume();
      this.#options.logger.error(
        { requestId, customer: caller.customer, api, status },
        "model gateway: the provider refused the platform's key",
      );
      send(res, providerUnavailable(provider, "the provider refused the platform's credentials"));
      return 'unavailable';
    }
    const headers: Record<string, string | string[]> = { 'x-blytz-request-id': requestId };
    for (const [name, value] of Object.entries(answer.headers))
      if (value !== undefined && passesBack(name)) headers[name] = value;
    res.writeHead(status, headers);
    res.flushHeaders();
    const contentType = String(answer.headers['content-type'] ?? '');
    const meter = status >= 200 && status < 300 ? createUsageMeter(api, contentType.includes('text/event-stream')) : undefined;

    const ended = await relay(answer, res, meter === undefined ? undefined : (chunk) => meter.push(chunk));
    const usage = meter?.finish();
    const log = {
      requestId,
      customer: caller.customer,
      api,
      model: prepared.model,
      status,
      streamed: prepared.streamed,
      complete: ended,
      ms: Math.round(performance.now() - started),
      ...(usage ? { inputTokens: usage.inputTokens, outputTokens: usage.outputTokens } : {}),
    };
    if (!meter) {
      this.#options.logger.info(log, 'model request: provider error relayed');
      return 'provider_error';
    }
    if (!usage) {
      this.#options.logger.warn(log, 'model request answered without usage: nothing metered');
      return 'usage_missing';
    }
    this.#options.logger.info(log, 'model request');
    for (const [kind, value] of [
      ['input', usage.inputTokens],
      ['cached_input', usage.cachedInputTokens],
      ['output', usage.outputTokens],
    ] as const) {
      this.#options.metrics?.modelTokens.inc({ api, kind }, value);
    }
    const recorded = await this.#record(
      {
        id: requestId,
        customer: caller.customer,
        period,
        api,
        model: prepared.model,
        usage,
      },
      budget,
    );
    return recorded ? 'ok' : 'unrecorded';
  }

  /**
   * Records usage, retrying a failed write with back-off (the request id makes a repeat of a
   * write that did land change nothing). Resolves false if every attempt failed.
   */
  #record(request: MeteredRequest, budget: ModelBudget): Promise<boolean> {
    const write = (async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          const { overageTokens } = await this.#options.store.record(request, budget);
          this.#options.onRecorded?.(overageTokens);
          return true;
        } catch (error) {
          if (attempt >= RECORD_ATTEMPTS) {
            this.#options.logger.error(
              { err: error, requestId: request.id, customer: request.customer, usage: usageLog(request.usage) },
              'model usage could not be recorded',
            );
            return false;
          }
          await new Promise((r) => setTimeout(r, Math.min(5000, 100 * 2 ** attempt)));
        }
      }
    })();
    const tracked = write.then(() => undefined);
    this.#pendingWrites.add(tracked);
    void tracked.finally(() => this.#pendingWrites.delete(tracked));
    return write;
  }
}

function usageLog(usage: Usage) {
  return { inputTokens: usage.inputTokens, cachedInputTokens: usage.cachedInputTokens, outputTokens: usage.outputTokens };
}

/** The provider's own failed answer to this request (not the one an open breaker remembers as its cause). */
function providerFailureOf(error: unknown): ProviderFailure | undefined {
  if (error instanceof CircuitOpenError) return undefined;
  if (error instanceof ProviderFailure) return error;
  if (error instanceof DependencyError && error.cause instanceof ProviderFailure) return error.cause;
  return undefined;
}

/** `Authorization: Bearer <key>` (OpenAI's SDK) or `x-api-key: <key>` (Anthropic's). */
export function credentialOf(req: IncomingMessage): string | undefined {
  const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  if (bearer) return bearer[1];
  const key = req.headers['x-api-key'];
  return typeof key === 'string' && key.length > 0 ? key.trim() : undefined;
}

interface PreparedBody {
  body: Buffer;
  model: string;
  streamed: boolean;
}

/**
 * Checks a request body and makes the one change the gateway needs: OpenAI chat streams report
 * usage only when asked (stream_options.include_usage), and metering must not depend on the
 * assistant asking. Pure.
 */
export function prepareBody(
  route: GatewayRoute,
  raw: Buffer,
  allowedModels: readonly string[],
): PreparedBody | { answer: GatewayAnswer } {
  // Checked before parsing: V8 parses deep nesting slowly (a 2 MB body a million levels deep
  // takes half a second, 20 MB seconds), on the one thread serving every customer.
  if (nestedDeeperThan(raw, MAX_JSON_DEPTH)) return { answer: badRequest(route.provider, 'The request body is nested too deeply.') };
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    return { answer: badRequest(route.provider, 'The request body is not valid JSON.') };
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    return { answer: badRequest(route.provider, 'The request body must be a JSON object.') };
  }
  const body = json as Record<string, unknown>;
  const model = body['model'];
  if (typeof model !== 'string' || model === '') return { answer: badRequest(route.provider, 'model: field required') };
  if (!allowedModels.includes(model)) return { answer: modelNotAllowed(route.provider, model) };
  // A background response finishes after the request; its usage would never pass the gateway.
  if (route.api === 'openai-responses' && body['background'] === true) {
    return { answer: badRequest(route.provider, 'background responses are not available through this gateway') };
  }
  const streamed = body['stream'] === true;
  if (route.api === 'openai-chat' && streamed) {
    const options = body['stream_options'];
    const current =
      typeof options === 'object' && options !== null && !Array.isArray(options) ? (options as Record<string, unknown>) : {};
    if (current['include_usage'] !== true) {
      body['stream_options'] = { ...current, include_usage: true };
      return { body: Buffer.from(JSON.stringify(body)), model, streamed };
    }
  }
  return { body: raw, model, streamed };
}

/** Far deeper than any model request (messages, content parts, tool schemas) nests. */
const MAX_JSON_DEPTH = 256;

/**
 * Whether a JSON text nests arrays and objects more than `limit` deep: brackets outside strings,
 * strings skipped to their closing quote (one not escaped) by the native search, so a body of
 * inline images costs little. Not a validation: a malformed text is left to JSON.parse.
 */
export function nestedDeeperThan(raw: Buffer, limit: number): boolean {
  let depth = 0;
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i];
    if (c === 0x22) {
      let end = raw.indexOf(0x22, i + 1);
      for (;;) {
        if (end === -1) return false;
        let slashes = 0;
        while (raw[end - 1 - slashes] === 0x5c) slashes++;
        if (slashes % 2 === 0) break;
        end = raw.indexOf(0x22, end + 1);
      }
      i = end;
    } else if (c === 0x5b || c === 0x7b) {
      if (++depth > limit) return true;
    } else if (c === 0x5d || c === 0x7d) {
      depth--;
    }
  }
  return false;
}

/** Reads a request body up to `limit` bytes; 'gone' when the caller left before its end. */
function readBody(req: IncomingMessage, limit: number): Promise<Buffer | 'too-large' | 'gone'> {
  return new Promise((resolve) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > limit) {
      resolve('too-large');
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.resume();
        resolve('too-large');
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    // A caller who leaves mid-body is no gateway failure; its place in flight is given back.
    req.on('error', () => resolve('gone'));
    req.on('close', () => resolve('gone'));
  });
}

/**
 * Passes the provider's answer on as it arrives, honouring the customer's back-pressure; if the
 * customer goes away, keeps reading (discarding) so `onChunk` still sees the whole answer.
 * Resolves true when the provider's answer ended normally, false when it broke off.
 */
function relay(answer: IncomingMessage, res: ServerResponse, onChunk: ((chunk: Buffer) => void) | undefined): Promise<boolean> {
  return new Promise((resolve) => {
    // A customer who left while the provider was still to answer closed `res` before this
    // listener: taken as here, the answer waited forever for a drain, unmetered, holding its
    // upstream socket and the customer's place in flight until the provider's idle timeout.
    let clientGone = res.destroyed;
    res.on('close', () => {
      if (res.writableFinished) return;
      clientGone = true;
      answer.resume();
    });
    answer.on('data', (chunk: Buffer) => {
      onChunk?.(chunk);
      if (clientGone) return;
      if (!res.write(chunk)) {
        answer.pause();
        res.once('drain', () => answer.resume());
      }
    });
    let ended = false;
    answer.on('end', () => {
      ended = true;
      if (!clientGone) res.end();
    });
    answer.on('error', () => {});
    answer.on('close', () => {
      // Broken off mid-answer: the customer's side is cut too, so its SDK sees a failed stream
      // rather than one that looks complete.
      if (!ended) res.destroy();
      resolve(ended);
    });
  });
}

function send(res: ServerResponse, answer: GatewayAnswer, closeConnection = false): void {
  const text = JSON.stringify(answer.body);
  res.writeHead(answer.status, {
    'content-type': 'application/json',
    'content-length': String(Buffer.byteLength(text)),
    ...answer.headers,
    ...(closeConnection ? { connection: 'close' } : {}),
  });
  res.end(text);
}
