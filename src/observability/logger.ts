import { pino, type Logger, type DestinationStream } from 'pino';

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
  'authorization',
  '*.authorization',
  '*.headers.authorization',
  '*.headers["stripe-signature"]',
  '*.headers.cookie',
  'secret',
  '*.secret',
  'secrets',
  '*.secrets',
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
];

/** Values that look like secrets are also masked inside free text (error messages, URLs). */
const SECRET_PATTERNS: Array<[RegExp, string]> = [
  [/\b\d{5,12}:[A-Za-z0-9_-]{30,}\b/g, '[REDACTED]'], // Telegram bot token
  [/\b(?:sk|rk|whsec)_[A-Za-z0-9_]{8,}\b/g, '[REDACTED]'], // Stripe keys
  [/\bBearer\s+[A-Za-z0-9._~+/=-]{8,}/gi, 'Bearer [REDACTED]'],
  [/([?&](?:token|access_token|key)=)[^&\s"]+/gi, '$1[REDACTED]'],
];

export function maskSecrets(text: string): string {
  let out = text;
  for (const [pattern, replacement] of SECRET_PATTERNS) out = out.replace(pattern, replacement);
  return out;
}

export interface LoggerOptions {
  level?: string;
  destination?: DestinationStream;
}

export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      level: options.level ?? 'info',
      base: { service: 'blytz' },
      redact: { paths: REDACTED_PATHS, censor: '[REDACTED]' },
      formatters: {
        log(object) {
          // Free-text fields may carry a secret inside an error message or URL.
          for (const key of ['msg', 'message', 'url', 'err']) {
            const value = object[key];
            if (typeof value === 'string') object[key] = maskSecrets(value);
          }
          return object;
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
      },
    },
    options.destination,
  );
}
