import { readFileSync } from 'node:fs';
import { totalmem } from 'node:os';
import { z } from 'zod';
import { checkCapacity } from './domain/capacity.js';
import { OPENCLAW_IMAGE } from './domain/openclaw.js';
import { parseModelBudgets } from './domain/model-budget.js';

/**
 * Configuration comes from the environment (contract section 2), parsed once at start by the
 * composition root. A bad value fails start with one message naming every bad variable.
 */

const port = z.coerce.number().int().min(1).max(65_535);
const positiveInt = z.coerce.number().int().positive();
const url = z.string().url();
const booleanish = z.enum(['true', 'false', '1', '0', 'yes', 'no']).transform((v) => v === 'true' || v === '1' || v === 'yes');

const portRange = z
  .string()
  .regex(/^\d+-\d+$/, 'must look like 30000-32767')
  .transform((s) => {
    const [from, to] = s.split('-').map(Number) as [number, number];
    return { from, to };
  })
  .refine((r) => r.from >= 1024 && r.to <= 65_535 && r.from <= r.to, 'must be an ascending range within 1024-65535');

const modelName = z.string().regex(/^(openai|anthropic)\/[A-Za-z0-9._:-]{1,100}$/, 'must be openai/<model> or anthropic/<model>');

/** BLYTZ_MODEL_BUDGETS: parsed as the gateway will parse it, its message naming the bad part. */
function checkModelBudgets(text: string, ctx: z.RefinementCtx): void {
  try {
    parseModelBudgets(text);
  } catch (error) {
    ctx.addIssue({ code: 'custom', message: (error as Error).message });
  }
}

/**
 * A label selector of equalities, `key=value,key=value` (a NetworkPolicy's matchLabels): keys are
 * qualified names (an optional DNS-subdomain prefix and `/`), values label values.
 */
const matchLabels = z
  .string()
  .regex(
    /^([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?=([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?(,([a-z0-9]([-a-z0-9.]*[a-z0-9])?\/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?=([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?)*$/,
    'must be labels like app.kubernetes.io/name=ingress-nginx,app=web',
  )
  .transform((value) => Object.fromEntries(value.split(',').map((pair) => pair.split('=') as [string, string])));

const namespaceName = z.string().regex(/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/, 'must be a namespace name (DNS-1123 label)');

/** Telegram's own Bot API; customers' gateways are told another root only when it differs. */
export const TELEGRAM_API_DEFAULT = 'https://api.telegram.org';

const logLevel = z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']);

const envSchema = z.object({
  DATABASE_URL: z
    .string()
    .regex(/^postgres(ql)?:\/\//, 'must be a postgres:// connection string')
    .optional(),
  BLYTZ_DATA_DIR: z.string().min(1).default('./data'),
  PORT: port.default(8080),
  // Loopback by default: the admin API must not face every network this machine is on. In a
  // container (compose, Kubernetes) set HOST=0.0.0.0, so the published port or Service reaches it.
  HOST: z.string().min(1).default('127.0.0.1'),
  DOCKER_HOST: z
    .string()
    .regex(/^(unix|tcp|http|https):\/\//, 'must be unix:///path or tcp://host:port')
    .default('unix:///var/run/docker.sock'),
  CADDY_ADMIN_URL: url.default('http://127.0.0.1:2019'),
  BLYTZ_CADDY_SERVER: z
    .string()
    .regex(/^[a-zA-Z0-9_-]{1,64}$/, 'must be a simple server name')
    .default('blytz'),
  BLYTZ_CADDY_LISTEN: z
    .string()
    .regex(/^[^\s]*:\d+$/, 'must be a listen address like :80')
    .default(':80'),
  BLYTZ_BASE_DOMAIN: z
    .string()
    .regex(
      /^(?=.{1,190}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/,
      'must be a lowercase DNS name',
    )
    .default('blytz.localhost'),
  BLYTZ_PUBLIC_SCHEME: z.enum(['http', 'https']).default('https'),
  // The pinned OpenClaw release (src/domain/openclaw.ts), never :latest: a rollout must know its target.
  BLYTZ_CUSTOMER_IMAGE: z.string().min(1).default(OPENCLAW_IMAGE),
  // Addresses (IPs or CIDRs, comma-separated) the customer's gateway trusts as its proxy, taking
  // the client from their X-Forwarded-For. Default on Docker: the customers' bridge gateway, which
  // Caddy's requests arrive from through the port publish. Kubernetes: set it to the addresses
  // Caddy's (or the ingress controller's) pods have, e.g. the pod CIDR; never loopback or the
  // nodes' addresses, which probes come from (OpenClaw refuses a trusted proxy naming no client).
  BLYTZ_ASSISTANT_TRUSTED_PROXIES: z
    .string()
    .regex(/^[0-9a-fA-F:.]+(\/\d{1,3})?(\s*,\s*[0-9a-fA-F:.]+(\/\d{1,3})?)*$/, 'must be IP addresses or CIDRs, comma-separated')
    .transform((value) => value.split(',').map((part) => part.trim()))
    .optional(),
  BLYTZ_CONTAINER_PORT: port.default(18789),
  BLYTZ_PORT_RANGE: portRange.default({ from: 30_000, to: 32_767 }),
  BLYTZ_ADMIN_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  BLYTZ_SECRET_KEY: z
    .string()
    .refine((s) => Buffer.from(s, 'base64').length === 32, 'must be 32 bytes, base64-encoded')
    .optional(),
  // Key rotation: keys rotated out, still accepted for opening until `blytz reseal` has run.
  BLYTZ_SECRET_KEY_PREVIOUS: z
    .string()
    .refine(
      (s) => s.split(',').every((k) => Buffer.from(k.trim(), 'base64').length === 32),
      'must be 32-byte base64 keys, comma-separated',
    )
    .optional(),
  BLYTZ_WORKERS: positiveInt.max(256).default(4),
  BLYTZ_RESYNC_SECONDS: positiveInt.default(300),
  BLYTZ_ROUTE_SWEEP_SECONDS: positiveInt.default(10),
  STRIPE_SECRET_KEY: z.string().min(1).optional(),
  STRIPE_WEBHOOK_SECRET: z.string().min(1).optional(),
  STRIPE_PRICE_ID: z.string().min(1).optional(),
  STRIPE_API_BASE: url.optional(),
  TELEGRAM_API_BASE: url.default(TELEGRAM_API_DEFAULT),
  // Unset: as many as this host's memory holds on the smallest plan at its limit (domain/capacity.ts).
  BLYTZ_MAX_CUSTOMERS: z.coerce
    .number()
    .int()
    .min(0)
    .default(() => Math.max(1, checkCapacity(0, totalmem()).fit.personal)),
  BLYTZ_TRUST_PROXY: z.string().optional(),
  BLYTZ_RETENTION_DAYS: z.coerce.number().min(0).default(30),
  BLYTZ_RUNTIME: z.enum(['docker', 'kubernetes']).default('docker'),
  BLYTZ_SOURCE: z.enum(['postgres', 'kubernetes']).default('postgres'),
  // Where customer routes live: Caddy's admin API, or one networking.k8s.io/v1 Ingress per
  // customer (runtime `kubernetes` only; checked in loadConfig).
  BLYTZ_ROUTES: z.enum(['caddy', 'ingress']).default('caddy'),
  // BLYTZ_ROUTES=ingress: the Ingresses' spec.ingressClassName; unset: the cluster's default class.
  BLYTZ_INGRESS_CLASS: z
    .string()
    .regex(/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, 'must be an IngressClass name (DNS-1123 subdomain)')
    .optional(),
  // The namespace customers' objects, Customer resources and the Lease live in (runtime or source
  // `kubernetes`); unset: the pod's own namespace, else the kubeconfig context's, else `default`.
  BLYTZ_NAMESPACE: namespaceName.optional(),
  // BLYTZ_ROUTES=ingress: the ingress controller's pods (namespace, labels), the only ones each
  // customer's NetworkPolicy lets in (with Caddy routes: the kit's Caddy pods).
  BLYTZ_INGRESS_CONTROLLER_NAMESPACE: namespaceName.default('ingress-nginx'),
  BLYTZ_INGRESS_CONTROLLER_PODS: matchLabels.prefault('app.kubernetes.io/name=ingress-nginx'),
  // Runtime `kubernetes`: the pods serving the model gateway (in BLYTZ_NAMESPACE) and the port
  // customer pods connect to on them; their NetworkPolicy lets them out to it. Unset port: no way out to it.
  BLYTZ_MODEL_GATEWAY_PODS: matchLabels.prefault('app.kubernetes.io/name=blytz,app.kubernetes.io/component=controller'),
  BLYTZ_MODEL_GATEWAY_PORT: port.optional(),
  BLYTZ_DOCKER_EVENTS: booleanish.default(true),
  // Docker: each customer gets a network of its own with a /28 from this range (tenant isolation,
  // runtime/docker/networks.ts). Keep it clear of the host's other networks.
  BLYTZ_DOCKER_NETWORK_POOL: z
    .string()
    .regex(/^(\d{1,3}\.){3}\d{1,3}\/(\d|1\d|2[0-8])$/, 'must be an IPv4 range like 10.199.0.0/16 (at most /28)')
    .default('10.199.0.0/16'),
  // Where the signup site and status pages are reached (Checkout's success URL); default
  // `<scheme>://<base domain>`.
  BLYTZ_PUBLIC_URL: url.optional(),
  // Separates several control planes sharing one Docker engine (tests, staging beside
  // production): containers get label cloud.blytz.instance=<value> and lists filter on it.
  BLYTZ_INSTANCE: z
    .string()
    .regex(/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/, 'must be a short lowercase name')
    .optional(),
  // On-demand TLS for customer hosts through Caddy's `ask` check (needs a public DNS name).
  BLYTZ_CADDY_TLS: booleanish.default(false),
  // Fleet rollouts (a new image, template manifest or plan limits): customers recreated at once,
  // a count or a percentage of the active customers (at least 1); failed updates that pause it.
  BLYTZ_ROLLOUT_MAX_UNAVAILABLE: z
    .string()
    .regex(/^(\d+|(100|[1-9]\d?)%)$/, 'must be a number like 2 or a percentage like 10%')
    .refine((v) => v !== '0', 'must be at least 1')
    .default('10%'),
  BLYTZ_ROLLOUT_MAX_FAILURES: z.coerce.number().int().min(0).default(2),
  // Overrides each template's startTimeoutSeconds for rollouts (tests use a few seconds).
  BLYTZ_ROLLOUT_START_TIMEOUT_SECONDS: positiveInt.max(3600).optional(),
  // Included model access (issue 23): the model gateway, its own listener for customer
  // containers only (never the public app). Unset (or without the default model's platform key):
  // no gateway, and signup asks every customer for a model key of their own.
  BLYTZ_MODEL_GATEWAY_LISTEN: z
    .string()
    .regex(/^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):\d{1,5}$/, 'must be host:port, e.g. 172.30.0.1:8090')
    .optional(),
  // What customer containers dial (openclaw.json baseUrl); default http://<listen address>.
  BLYTZ_MODEL_GATEWAY_URL: url.optional(),
  // The included model, <openai|anthropic>/<model id>; more that may be asked for, comma-separated.
  BLYTZ_MODEL_DEFAULT: modelName.default('anthropic/claude-haiku-4-5'),
  BLYTZ_MODEL_ALLOWED: z
    .string()
    .refine(
      (s) => s.split(',').every((m) => modelName.safeParse(m.trim()).success),
      'must be openai/<model> or anthropic/<model>, comma-separated',
    )
    .optional(),
  // Monthly token budgets per plan, overriding the defaults: plan=tokens[/ceiling],...
  BLYTZ_MODEL_BUDGETS: z.string().superRefine(checkModelBudgets).optional(),
  // runtime: a credential is taken only from its customer's own container; off: from anywhere.
  BLYTZ_MODEL_SOURCE_CHECK: z.enum(['runtime', 'off']).default('runtime'),
  // The platform's provider keys (or *_FILE): used by the gateway only, never put in a container.
  BLYTZ_OPENAI_API_KEY: z.string().min(1).optional(),
  BLYTZ_ANTHROPIC_API_KEY: z.string().min(1).optional(),
  BLYTZ_OPENAI_API_BASE: url.default('https://api.openai.com'),
  BLYTZ_ANTHROPIC_API_BASE: url.default('https://api.anthropic.com'),
  // Stripe meter for plans that bill model overage; unset: overage is not reported.
  STRIPE_METER_EVENT_NAME: z
    .string()
    .regex(/^[A-Za-z0-9_.:-]{1,100}$/, 'must be a Stripe meter event name')
    .optional(),
  // Backups (issue 20): where archives live. Unset: the folder $BLYTZ_DATA_DIR/backups.
  // `file:///path` another folder; `s3://bucket/prefix` an S3-compatible bucket.
  BLYTZ_BACKUP_URL: z
    .string()
    .regex(/^(s3:\/\/[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](\/.*)?|file:\/\/\/.+)$/, 'must be s3://bucket/prefix or file:///path')
    .optional(),
  // An S3-compatible endpoint (MinIO, Ceph, ...); unset: AWS S3 itself. Path-style addressing with it.
  BLYTZ_BACKUP_S3_ENDPOINT: url.optional(),
  BLYTZ_BACKUP_S3_REGION: z.string().min(1).default('us-east-1'),
  // Unset: the AWS SDK's own chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a role, ...).
  BLYTZ_BACKUP_S3_ACCESS_KEY_ID: z.string().min(1).optional(),
  BLYTZ_BACKUP_S3_SECRET_ACCESS_KEY: z.string().min(1).optional(),
  // Override every plan's backup policy: seconds between scheduled backups (0: none), backups kept.
  BLYTZ_BACKUP_SCHEDULE_SECONDS: z.coerce.number().int().min(0).optional(),
  BLYTZ_BACKUP_KEEP: positiveInt.max(1000).optional(),
  // Backups and restores running at once (each streams one customer's state).
  BLYTZ_BACKUP_WORKERS: positiveInt.max(16).default(2),
  LOG_LEVEL: logLevel.default('info'),
});

export type Config = z.infer<typeof envSchema>;

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  - ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

/**
 * Secrets that may come from a file instead, `<NAME>_FILE` (how Docker and Kubernetes mount
 * secrets), so they need not sit in the process environment, where `docker inspect`,
 * /proc/<pid>/environ and every child process see them.
 */
export const FILE_VARIABLES = [
  'DATABASE_URL',
  'BLYTZ_ADMIN_TOKEN',
  'BLYTZ_SECRET_KEY',
  'BLYTZ_SECRET_KEY_PREVIOUS',
  'STRIPE_SECRET_KEY',
  'STRIPE_WEBHOOK_SECRET',
  'BLYTZ_OPENAI_API_KEY',
  'BLYTZ_ANTHROPIC_API_KEY',
  'BLYTZ_BACKUP_S3_ACCESS_KEY_ID',
  'BLYTZ_BACKUP_S3_SECRET_ACCESS_KEY',
] as const;

/** `NAME`, else the contents of the file `NAME_FILE` names (one trailing newline dropped). */
export function secretFromEnv(env: NodeJS.ProcessEnv, name: string): { value?: string; problem?: string } {
  const direct = env[name];
  const file = env[`${name}_FILE`];
  if (file === undefined || file === '') return direct === undefined || direct === '' ? {} : { value: direct };
  if (direct !== undefined && direct !== '') return { problem: `${name}: set ${name} or ${name}_FILE, not both` };
  try {
    const value = readFileSync(file, 'utf8').replace(/\r?\n$/, '');
    return value === '' ? {} : { value };
  } catch (error) {
    return { problem: `${name}_FILE: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})` };
  }
}

/** Parses the environment; empty strings count as unset, like most twelve-factor apps. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const input: Record<string, string> = {};
  const fileProblems: string[] = [];
  for (const key of Object.keys(envSchema.shape)) {
    if ((FILE_VARIABLES as readonly string[]).includes(key)) {
      const { value, problem } = secretFromEnv(env, key);
      if (problem) fileProblems.push(problem);
      if (value !== undefined) input[key] = value;
      continue;
    }
    const value = env[key];
    if (value !== undefined && value !== '') input[key] = value;
  }
  const parsed = envSchema.safeParse(input);
  if (!parsed.success || fileProblems.length > 0) {
    const problems = (parsed.success ? [] : parsed.error.issues).map((issue) => {
      const name = String(issue.path[0] ?? '(environment)');
      return `${name}: ${issue.message}`;
    });
    throw new ConfigError([...fileProblems, ...problems]);
  }
  const problems = crossFieldProblems(parsed.data);
  if (problems.length > 0) throw new ConfigError(problems);
  return parsed.data;
}

/** Values that are each valid but not together, reported like the others (`NAME: why`). */
function crossFieldProblems(config: Config): string[] {
  const problems: string[] = [];
  if (config.BLYTZ_ROUTES === 'ingress' && config.BLYTZ_RUNTIME !== 'kubernetes') {
    problems.push(
      `BLYTZ_ROUTES: ingress needs BLYTZ_RUNTIME=kubernetes (an Ingress routes to a customer's Service; runtime is ${config.BLYTZ_RUNTIME})`,
    );
  }
  problems.push(...modelGatewayProblems(config));
  if ((config.BLYTZ_BACKUP_S3_ACCESS_KEY_ID === undefined) !== (config.BLYTZ_BACKUP_S3_SECRET_ACCESS_KEY === undefined)) {
    problems.push('BLYTZ_BACKUP_S3_ACCESS_KEY_ID: set it together with BLYTZ_BACKUP_S3_SECRET_ACCESS_KEY, or neither');
  }
  return problems;
}

/**
 * The model gateway needs an address containers can dial. A missing platform key is not an
 * error here: the deploy kits turn the gateway on by default, and without the key the server
 * starts with included model access not offered (models/included-access.ts), and says so.
 */
function modelGatewayProblems(config: Config): string[] {
  const listen = config.BLYTZ_MODEL_GATEWAY_LISTEN;
  if (!listen) return [];
  const host = listen.slice(0, listen.lastIndexOf(':')).replace(/^\[|\]$/g, '');
  if (!config.BLYTZ_MODEL_GATEWAY_URL && (host === '0.0.0.0' || host === '::' || host === '')) {
    return [
      `BLYTZ_MODEL_GATEWAY_URL: required when BLYTZ_MODEL_GATEWAY_LISTEN (${listen}) is every address: say which one customer containers dial`,
    ];
  }
  return [];
}

/**
 * Where a process on this machine reaches a server bound to `host:port`: an any-address bind
 * (0.0.0.0, ::) by loopback. `blytz serve` logs it, signup links default to it, and the CLI
 * talks to it unless told `--server`.
 */
export function localUrl(host: string, port: number): string {
  const reachable = host === '0.0.0.0' || host === '::' ? '127.0.0.1' : host;
  return `http://${reachable.includes(':') ? `[${reachable}]` : reachable}:${port}`;
}
