import { pino, type Logger, type DestinationStream } from 'pino';
import pretty from 'pino-pretty';

export type { Logger } from 'pino';

/**
 * Fields whose values are secrets wherever they appear in a log object, at any depth (bot tokens,
 * API keys, authorization headers, session cookies, `secret*` fields, the database URL). Names
 * are compared without case, `-` or `_`, so `STRIPE_WEBHOOK_SECRET`, `webhookSecret` and
 * `x-api-key` are all found: a field is secret when its name is listed here or ends with one of
 * the suffixes.
 */
const SECRET_FIELDS = new Set(['authorization', 'cookie', 'setcookie', 'stripesignature', 'databaseurl', 'blytzsecretkeyprevious']);
const SECRET_FIELD_SUFFIXES = ['token', 'secret', 'secrets', 'secretkey', 'password', 'apikey', 'credential'];
const CENSOR = '[REDACTED]';

/** Verdicts by field name as written: the names a process logs are few, so each is judged once. */
const fieldVerdicts = new Map<string, boolean>();

export function isSecretField(name: string): boolean {
  let verdict = fieldVerdicts.get(name);
  if (verdict === undefined) {
    const plain = name.toLowerCase().replace(/[-_]/g, '');
    verdict = SECRET_FIELDS.has(plain) || SECRET_FIELD_SUFFIXES.some((suffix) => plain.endsWith(suffix));
    // Bounded all the same: a log of a map keyed by customer names must not grow this forever.
    if (fieldVerdicts.size < 10_000) fieldVerdicts.set(name, verdict);
  }
  return verdict;
}

/**
 * `value` with every secret field's value replaced by [REDACTED], however deep: the value itself
 * when it holds none (the usual case, no copy), else a copy of only the objects on the way to
 * one, so the caller's object never changes because it was logged. An object with its own
 * `toJSON` (a Date, a Buffer) is written by that and left alone; a cycle is cut at
 * "[Circular]", as pino itself writes it.
 */
export function censorSecretFields<T>(value: T): T {
  return censor(value, undefined) as T;
}

function censor(value: unknown, walked: Map<object, unknown> | undefined): unknown {
  if (typeof value !== 'object' || value === null) return value;
  const done = walked ?? new Map<object, unknown>();
  if (done.has(value)) return done.get(value) ?? '[Circular]'; // undefined: still being walked, so a cycle
  if (typeof (value as { toJSON?: unknown }).toJSON === 'function') return value;
  done.set(value, undefined);
  let out: unknown;
  if (Array.isArray(value)) {
    let copy: unknown[] | undefined;
    value.forEach((item: unknown, i) => {
      const censored = censor(item, done);
      if (censored !== item) (copy ??= [...value])[i] = censored;
    });
    out = copy ?? value;
  } else {
    const record = value as Record<string, unknown>;
    let copy: Record<string, unknown> | undefined;
    for (const key of Object.keys(record)) {
      const item = record[key];
      const censored = isSecretField(key) ? CENSOR : censor(item, done);
      if (censored !== item) (copy ??= { ...record })[key] = censored;
    }
    out = copy ?? value;
  }
  done.set(value, out);
  return out;
}

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

/** Fields that hold free text, masked by pattern as well. */
const FREE_TEXT_FIELDS = new Set(['msg', 'message', 'url', 'err']);

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
  const logger = pino(
    {
      level: options.level ?? 'info',
      base: { service: 'blytz' },
      formatters: {
        log(object) {
          // Secret fields at any depth (an error is the err serializer's), and secret-shaped text
          // in the free-text fields (an error message, a URL). A copy when anything changes: the
          // caller's object must not change because it was logged.
          let out = object;
          for (const key of Object.keys(object)) {
            const value = object[key];
            let written = key === 'err' ? value : isSecretField(key) ? CENSOR : censor(value, undefined);
            if (typeof written === 'string' && FREE_TEXT_FIELDS.has(key)) written = maskSecrets(written);
            if (written !== value) {
              if (out === object) out = { ...object };
              out[key] = written;
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
          return censorSecretFields(serialized);
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
  // A child's bindings are written once, when it is made, and never pass through formatters.log:
  // censored here. Every descendant inherits this `child` (pino makes a child with
  // Object.create(parent)).
  const pinoChild = logger.child;
  logger.child = function child(this: Logger, bindings, childOptions) {
    return pinoChild.call(this, censorSecretFields(bindings), childOptions);
  } as Logger['child'];
  return logger;
}
