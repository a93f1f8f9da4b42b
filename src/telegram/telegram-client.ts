import { DependencyError, unguarded, type Guard } from '../resilience/guard.js';

/**
 * Checks a customer's bot token with the Bot API's `getMe` before anything is stored. The token
 * is part of the URL (`/bot<token>/getMe`), so neither the URL nor the fetch error (whose cause
 * may quote it) ever goes into a message, a log or an error we raise.
 */

export interface TelegramBot {
  id: number;
  username: string;
  firstName: string;
}

export interface BotTokenVerifier {
  /** The bot behind `token`; InvalidBotTokenError when Telegram rejects it; DependencyError when Telegram is down. */
  getMe(token: string): Promise<TelegramBot>;
}

/** Telegram rejected the token, or it belongs to a user rather than a bot: the customer's input is wrong. */
export class InvalidBotTokenError extends Error {
  readonly field = 'telegramBotToken';
  constructor(message: string) {
    super(message);
    this.name = 'InvalidBotTokenError';
  }
}

export interface TelegramClientOptions {
  /** TELEGRAM_API_BASE, e.g. https://api.telegram.org */
  apiBase: string;
  guard?: Guard;
  /** Per-attempt timeout (the guard may add its own). */
  timeoutMs?: number;
}

type GetMeOutcome = { ok: true; bot: TelegramBot } | { ok: false; reason: string };

export class TelegramClient implements BotTokenVerifier {
  readonly #base: string;
  readonly #guard: Guard;
  readonly #timeoutMs: number;

  constructor(options: TelegramClientOptions) {
    this.#base = options.apiBase.replace(/\/+$/, '');
    this.#guard = options.guard ?? unguarded;
    this.#timeoutMs = options.timeoutMs ?? 5000;
  }

  async getMe(token: string): Promise<TelegramBot> {
    // A rejected token is an answer, not a failure: it is returned (not thrown) from inside the
    // guard so it neither trips the breaker nor is retried.
    let outcome: GetMeOutcome;
    try {
      outcome = await this.#guard('getMe', (signal) => this.#getMe(token, signal));
    } catch (error) {
      // The guard's errors name the dependency (their causes are our URL-free errors); anything
      // else is rewrapped without a cause, so nothing that might quote the request travels on.
      if (error instanceof DependencyError) throw error;
      throw new DependencyError('telegram', 'getMe', safeMessage(error));
    }
    if (!outcome.ok) throw new InvalidBotTokenError(outcome.reason);
    return outcome.bot;
  }

  async #getMe(token: string, signal: AbortSignal): Promise<GetMeOutcome> {
    let response: Response;
    try {
      response = await fetch(`${this.#base}/bot${token}/getMe`, {
        method: 'GET',
        headers: { accept: 'application/json' },
        signal: AbortSignal.any([signal, AbortSignal.timeout(this.#timeoutMs)]),
      });
    } catch (error) {
      // The guard aborted this attempt (its timeout): let it report that in its own terms.
      if (signal.aborted) throw signal.reason;
      throw new TelegramCallError(`request failed (${errorCode(error)})`, { code: errorCode(error) });
    }
    const body = (await response.json().catch(() => undefined)) as
      { ok?: boolean; result?: { id?: unknown; is_bot?: unknown; username?: unknown; first_name?: unknown } } | undefined;
    if (response.status === 401 || response.status === 404) {
      return { ok: false, reason: 'Telegram does not know this bot token; copy it again from @BotFather' };
    }
    if (!response.ok || !body?.ok || !body.result) {
      throw new TelegramCallError(`unexpected answer (HTTP ${response.status})`, { status: response.status });
    }
    const { id, is_bot: isBot, username, first_name: firstName } = body.result;
    if (isBot !== true) return { ok: false, reason: 'this token does not belong to a bot' };
    if (typeof id !== 'number' || typeof username !== 'string' || username === '') {
      throw new TelegramCallError('answer without the bot id or username', { status: 502 });
    }
    return { ok: true, bot: { id, username, firstName: typeof firstName === 'string' ? firstName : username } };
  }
}

/**
 * A failed call, described without the URL. `status` and `code` are what the resilience guard
 * reads to tell transient failures (5xx, network) from answers.
 */
class TelegramCallError extends Error {
  readonly status: number | undefined;
  readonly code: string | undefined;
  constructor(message: string, details: { status?: number; code?: string }) {
    super(message);
    this.name = 'TelegramCallError';
    this.status = details.status;
    this.code = details.code;
  }
}

function safeMessage(error: unknown): string {
  if (error instanceof TelegramCallError) return error.message;
  return `failed (${errorCode(error)})`;
}

/** A safe summary of a fetch failure: error codes and names only, never a message (which may quote the URL). */
function errorCode(error: unknown): string {
  const e = error as { name?: unknown; code?: unknown; cause?: { code?: unknown; name?: unknown } };
  // Our own per-attempt timeout reads as a network timeout, which the guard retries.
  if (e.name === 'TimeoutError' || e.cause?.name === 'TimeoutError') return 'ETIMEDOUT';
  const code = e.cause?.code ?? e.code ?? e.cause?.name ?? e.name;
  return typeof code === 'string' && /^[A-Za-z_]{1,40}$/.test(code) ? code : 'ENETWORK';
}
