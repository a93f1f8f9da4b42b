/**
 * `openclaw.json`, the OpenClaw gateway's configuration, shared between the controller and the
 * gateway the way server-side apply shares an object in Kubernetes: each side owns named fields.
 *
 * - The controller owns the paths in `OWNED_PATHS` (listen address, auth token, allowed origins,
 *   trusted proxies, workspace, model and its key, the Telegram bot). Every render enforces them:
 *   set to the desired value, or deleted when nothing is desired there.
 * - Everything else belongs to OpenClaw: it migrates keys at start and records the paired owner
 *   and its own metadata in the same file. A render keeps all of it (`applyOwnedConfig`).
 *
 * The gateway watches the file and applies changes itself (`gateway.reload.mode: hybrid`: hot
 * where it can, an in-process restart where a key needs one), so a changed owned field is written
 * in place and never needs a new container; a render that changes no owned field writes nothing.
 *
 * Built as plain data and serialised with JSON.stringify, never by string formatting, so no
 * value (a token, a name) can break out of its field. Keys are added in a fixed order, so equal
 * input gives equal bytes. The keys are the ones the pinned version's schema defines
 * (`openclaw config schema`); test/integration/openclaw-config-validate.test.ts runs the pinned
 * package's own validator over every rendered shape.
 */

export interface OpenClawConfigInput {
  /** Port the gateway listens on inside the container. */
  port: number;
  /** Per-customer gateway token. */
  gatewayToken: string;
  /** The agent's workspace folder as the container sees it. */
  workspacePath: string;
  /** The customer's own origins (`https://<name>.<base>`, and with the port when not the default): the Control UI is served from them. */
  publicOrigins: readonly string[];
  /** Addresses whose X-Forwarded-For the gateway believes: the proxy in front of it (Caddy). */
  trustedProxies: readonly string[];
  telegramBotToken?: string | undefined;
  /** Bot API root for tests and self-hosted Bot API servers; unset: Telegram's own. */
  telegramApiRoot?: string | undefined;
  modelProvider?: string | undefined;
  modelApiKey?: string | undefined;
}

export interface ModelProvider {
  /** `env.vars.<variable>` is where OpenClaw reads the provider's API key from. */
  keyVariable: string;
  /** `agents.defaults.model.primary` when the customer runs on this provider. */
  defaultModel: string;
}

/**
 * The providers a customer may bring a key for. Without `agents.defaults.model.primary` the agent
 * picks OpenClaw's own default model (an OpenAI one), whatever key it has, so each provider names
 * the model its customers start on.
 */
export const MODEL_PROVIDER_CONFIG: Readonly<Record<string, ModelProvider>> = {
  anthropic: { keyVariable: 'ANTHROPIC_API_KEY', defaultModel: 'anthropic/claude-sonnet-4-6' },
  openai: { keyVariable: 'OPENAI_API_KEY', defaultModel: 'openai/gpt-5.4' },
  openrouter: { keyVariable: 'OPENROUTER_API_KEY', defaultModel: 'openrouter/auto' },
  google: { keyVariable: 'GEMINI_API_KEY', defaultModel: 'google/gemini-3.1-pro-preview' },
};

/** A key given without a provider is taken as Anthropic's. */
export const DEFAULT_MODEL_PROVIDER = 'anthropic';

type Path = readonly string[];

/**
 * The fields the controller owns, as paths into the config. Each render sets each one to its
 * desired value or deletes it; nothing outside these paths is ever changed by the controller.
 */
export const OWNED_PATHS: readonly Path[] = [
  ...Object.values(MODEL_PROVIDER_CONFIG).map((provider) => ['env', 'vars', provider.keyVariable]),
  ['gateway', 'mode'],
  ['gateway', 'port'],
  ['gateway', 'bind'],
  ['gateway', 'auth'],
  ['gateway', 'controlUi', 'allowedOrigins'],
  ['gateway', 'trustedProxies'],
  ['gateway', 'reload', 'mode'],
  ['agents', 'defaults', 'workspace'],
  ['agents', 'defaults', 'model', 'primary'],
  ['channels', 'telegram', 'enabled'],
  ['channels', 'telegram', 'botToken'],
  ['channels', 'telegram', 'dmPolicy'],
  ['channels', 'telegram', 'apiRoot'],
];

export type JsonObject = { [key: string]: unknown };

/** The controller's fields of `openclaw.json` for this customer (only the owned paths). */
export function buildOpenClawConfig(input: OpenClawConfigInput): JsonObject {
  const config: JsonObject = {};
  let primaryModel: string | undefined;
  if (input.modelApiKey) {
    const name = input.modelProvider ?? DEFAULT_MODEL_PROVIDER;
    const provider = MODEL_PROVIDER_CONFIG[name];
    if (provider === undefined) throw new Error(`unknown model provider "${name}"`);
    config.env = { vars: { [provider.keyVariable]: input.modelApiKey } };
    primaryModel = provider.defaultModel;
  }
  config.gateway = {
    mode: 'local',
    port: input.port,
    // `lan` listens on all interfaces inside the container; the host publishes the port on
    // 127.0.0.1 only, so Caddy remains the one way in.
    bind: 'lan',
    auth: { mode: 'token', token: input.gatewayToken },
    // The Control UI refuses a browser whose Origin it does not know: the customer's subdomain.
    controlUi: { allowedOrigins: [...input.publicOrigins] },
    // Caddy's requests arrive from these addresses; the gateway then takes the client from
    // X-Forwarded-For (its per-client auth rate limit needs the real client, not Caddy).
    trustedProxies: [...input.trustedProxies],
    reload: { mode: 'hybrid' },
  };
  config.agents = {
    defaults: {
      workspace: input.workspacePath,
      ...(primaryModel ? { model: { primary: primaryModel } } : {}),
    },
  };
  // The channel is always stated, so a removed bot token turns it off even where OpenClaw has
  // written its own keys (the paired owner) into the same block.
  config.channels = {
    telegram: input.telegramBotToken
      ? {
          enabled: true,
          botToken: input.telegramBotToken,
          // `pairing`: strangers who find the bot get a code the owner must approve first.
          dmPolicy: 'pairing',
          ...(input.telegramApiRoot ? { apiRoot: input.telegramApiRoot } : {}),
        }
      : { enabled: false },
  };
  return config;
}

export function serializeOpenClawConfig(config: JsonObject): string {
  return `${JSON.stringify(config, null, 2)}\n`;
}

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function getPath(config: JsonObject, path: Path): unknown {
  let node: unknown = config;
  for (const key of path) {
    if (!isObject(node) || !Object.hasOwn(node, key)) return undefined;
    node = node[key];
  }
  return node;
}

/**
 * `current` (what is on disk, OpenClaw's writes included) with every owned path set to its value
 * in `owned`, or deleted where `owned` has none. Objects that only held an owned field and are
 * left empty are removed; anything else stays exactly as it was. Pure: `current` is not changed.
 */
export function applyOwnedConfig(current: JsonObject, owned: JsonObject): JsonObject {
  const result = structuredClone(current);
  for (const path of OWNED_PATHS) {
    const value = getPath(owned, path);
    if (value === undefined) deletePath(result, path);
    else setPath(result, path, structuredClone(value));
  }
  return result;
}

function setPath(config: JsonObject, path: Path, value: unknown): void {
  let node = config;
  for (const key of path.slice(0, -1)) {
    // A scalar where we need an object (a hand edit, a corrupt write) gives way: the path is ours.
    if (!isObject(node[key])) node[key] = {};
    node = node[key] as JsonObject;
  }
  node[path[path.length - 1] as string] = value;
}

function deletePath(config: JsonObject, path: Path): void {
  const parents: JsonObject[] = [];
  let node: JsonObject = config;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (!isObject(next)) return;
    parents.push(node);
    node = next;
  }
  const leaf = path[path.length - 1] as string;
  if (!Object.hasOwn(node, leaf)) return;
  delete node[leaf];
  // Prune the objects this deletion emptied, innermost first.
  for (let depth = path.length - 2; depth >= 0 && Object.keys(node).length === 0; depth--) {
    const parent = parents[depth] as JsonObject;
    delete parent[path[depth] as string];
    node = parent;
  }
}

/** Only the owned paths of a config, for comparing what is on disk with what is desired. */
export function ownedProjection(config: JsonObject): JsonObject {
  return applyOwnedConfig({}, config);
}
