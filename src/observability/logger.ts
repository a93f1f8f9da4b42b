import { pino, type Logger, type DestinationStream } from 'pino';
import pretty from 'pino-pretty';

export type { Logger } from 'pino';

/**
 * Paths pino blanks out wherever they occur in a log object. Secrets must never reach logs:
 * bot tokens, API keys, authorization headers, and anything under a `secret*` key.
 */
export const REDACTED_PATHS = [
  'botToken',
  '*.botToken',
  '*.*.botToken',
  '*.*.*.botToken',
  'telegramBotToken',
  '*.telegramBotToken',
  'modelApiKey',
  '*.modelApiKey',
  'apiKey',
  '*.apiKey',
  'token',
  '*.token',
  'accessToken',
  '*.accessToken',
  'password',
  '*.password',
  // HTTP header names arrive in any case (Node lowercases incoming ones, callers' outgoing ones do not).
  'authorization',
  '*.authorization',
  'Authorization',
  '*.Authorization',
  '*.headers.authorization',
  '*.headers.Authorization',
  '*.*.headers.authorization',
  '*.*.headers.Authorization',
  '*.headers["stripe-signature"]',
  '*.headers["Stripe-Signature"]',
  '*.headers.cookie',
  '*.headers.Cookie',
  '*.headers["set-cookie"]',
  'secret',
  '*.secret',
  '*.*.secret',
  '*.*.*.secret',
  'secrets',
  '*.secrets',
  '*.*.secrets',
  'secretKey',
  '*.secretKey',
  'stripeSecretKey',
  'STRIPE_SECRET_KEY',
  'STRIPE_WEBHOOK_SECRET',
  'BLYTZ_ADMIN_TOKEN',
  'BLYTZ_SECRET_KEY',
  '*.STRIPE_SECRET_KEY',
  '*.STRIPE_WEBHOOK_SECRET',
  '*.BLYTZ_ADMIN_TOKEN',
  '*.BLYTZ_SECRET_KEY',
  'BLYTZ_SECRET_KEY_PREVIOUS',
  '*.BLYTZ_SECRET_KEY_PREVIOUS',
  'DATABASE_URL',
  '*.DATABASE_URL',
  // The platform's model provider keys, and customers' model credentials.
  'BLYTZ_OPENAI_API_KEY',
  '*.BLYTZ_OPENAI_API_KEY',
  'BLYTZ_ANTHROPIC_API_KEY',
  '*.BLYTZ_ANTHROPIC_API_KEY',
  'credential',
  '*.credential',
  '*.headers["x-api-key"]',
  '*.*.headers["x-api-key"]',
  'gatewayToken',
  '*.gatewayToken',
  '*.*.gatewayToken',
  'adminToken',
  '*.adminToken',
  'webhookSecret',
  '*.webhookSecret',
  // A manifest's spec.model.apiKey, and a Customer resource's.
  '*.*.apiKey',
  '*.*.*.apiKey',
];

/** Values that look like secrets are also masked inside free text (error messages, URLs). */
const SECRET_PATTERNS: Array<[RegExp, string]> = [
  // Telegram bot token; no leading \b, so it is also found inside Bot API URLs (`/bot<token>/getMe`).
  [/(?<!\d)\d{5,12}:[A-Za-z0-9_-]{30,}/g, '[REDACTED]'],
  [/\b(?:sk|rk|whsec)_[A-Za-z0-9_]{8,}\b/g, '[REDACTED]'], // Stripe keys
  // Model providers' keys: sk-..., sk-ant-..., sk-proj-..., sk-or-... and Google's AIza...
  [/\bsk-[A-Za-z0-9_-]{20,}/g, '[REDACTED]'],
  [/\bAIza[0-9A-Za-z_-]{30,}/g, '[REDACTED]'],
  // Customers' model credentials (the model gateway's keys).
  [/\bblytz-mk-[A-Za-z0-9_-]{20,}/g, '[REDACTED]'],
  // A password in a URL: postgres://blytz:<password>@host/db
  [/\b([a-z][a-z0-9+.-]*:\/\/[^:/\s@]+:)[^@\s/]+@/gi, '$1[REDACTED]@'],
  [/\bBearer\s+[A-Za-z0-9._~+/=-]{8,}/gi, 'Bearer [REDACTED]'],
  // Stops at a backslash too, so masking a serialized JSON line never eats an escape.
  [/([?&](?:token|access_token|key)=)[^&\s"\\]+/gi, '$1[REDACTED]'],
];

export function maskSecrets(text: string): string {
  let out = text;
  for (const [pattern, replacement] of SECRET_PATTERNS) out = out.replace(pattern, replacement);
  return out;
}

/**
 * `json`: one JSON object per line, for files, pipes and log collectors. `pretty`: one readable
 * line per entry (pino-pretty: local time, level, message, the other fields inline), for a
 * person at a terminal.
 */
export type LogFormat = 'json' | 'pretty';

export interface LoggerOptions {
  level?: string;
  /** Default: stdout. */
  destination?: DestinationStream;
  /** Default `json`. */
  format?: LogFormat;
}

/** What `blytz serve` writes: pretty on a terminal, JSON anywhere else. */
export function logFormatFor(output: { isTTY?: boolean }): LogFormat {
  return output.isTTY === true ? 'pretty' : 'json';
}

/**
 * pino-pretty as a stream in this thread, not as a worker-thread transport: it is for a person
 * watching a terminal, where throughput does not matter, and a synchronous stream loses no line
 * when `serve` exits on a second signal. Lines reach it already redacted and masked (the
 * `streamWrite` hook below runs first). Fields every line carries are left out.
 */
function prettyDestination(destination: DestinationStream | undefined): DestinationStream {
  return pretty({
    sync: true,
    colorize: destination === undefined && process.stdout.isTTY === true,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname,service,controller,component,requestId',
    singleLine: true,
    ...(destination ? { destination } : {}),
  });
}

export function createLogger(options: LoggerOptions = {}): Logger {
  const destination = options.format === 'pretty' ? prettyDestination(options.destination) : options.destination;
  return pino(
    {
      level: options.level ?? 'info',
      base: { service: 'blytz' },
      redact: { paths: REDACTED_PATHS, censor: '[REDACTED]' },
      formatters: {
        log(object) {
          // Free-text fields may carry a secret inside an error message or URL. A copy: the
          // caller's object must not change because it was logged.
          let out = object;
          for (const key of ['msg', 'message', 'url', 'err']) {
            const value = object[key];
            if (typeof value === 'string') {
              if (out === object) out = { ...object };
              out[key] = maskSecrets(value);
            }
          }
          return out;
        },
      },
      serializers: {
        err: (err: unknown) => {
          const serialized = pino.stdSerializers.err(err as Error);
          if (serialized.message) serialized.message = maskSecrets(serialized.message);
          if (serialized.stack) serialized.stack = maskSecrets(serialized.stack);
          return serialized;
        },
      },
      hooks: {
        logMethod(args, method) {
          // The message string itself (pino's second argument or first when alone).
          const masked = args.map((a) => (typeof a === 'string' ? maskSecrets(a) : a));
          return method.apply(this, masked as Parameters<typeof method>);
        },
        // The last line of defence: secret-shaped text anywhere in the finished line, e.g. the
        // `msg` pino copies from an Error logged without a message, or free text in any field.
        streamWrite: (line) => maskSecrets(line),
      },
    },
    destination,
  );
}
