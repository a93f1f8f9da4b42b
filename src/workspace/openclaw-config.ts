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

import { GATEWAY_PROVIDER_ID, type ModelAccessFragment } from './model-access-config.js';

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
  /** The platform's included model through the model gateway, used when there is no key of the customer's own. */
  modelAccess?: ModelAccessFragment | undefined;
}

export interface ModelProvider {
  /**
   * The environment variable OpenClaw would also read the key from. Blytz no longer renders it
   * (`env.vars.<variable>`: OpenClaw applies a changed `env` only by restarting the gateway); it
   * stays owned so that a key an older render left there is deleted, since OpenClaw prefers an
   * environment key to the provider entry's.
   */
  legacyKeyVariable: string;
  /** `agents.defaults.model.primary` when the customer runs on this provider. */
  defaultModel: string;
}

/**
 * The providers a customer may bring a key for, by OpenClaw's provider id. The key goes into
 * `models.providers.<id>.apiKey`: OpenClaw 2026.9.6 reloads `models.*` hot (no restart, the
 * running gateway uses the new key for its next request) and takes a provider entry's literal
 * `apiKey` when no auth profile or environment variable holds one. The entry needs nothing else
 * for its built-in providers (their endpoint and catalogue come from OpenClaw's own plugins).
 * Without `agents.defaults.model.primary` the agent picks OpenClaw's own default model (an OpenAI
 * one), whatever key it has, so each provider names the model its customers start on.
 */
export const MODEL_PROVIDER_CONFIG: Readonly<Record<string, ModelProvider>> = {
  anthropic: { legacyKeyVariable: 'ANTHROPIC_API_KEY', defaultModel: 'anthropic/claude-sonnet-4-6' },
  openai: { legacyKeyVariable: 'OPENAI_API_KEY', defaultModel: 'openai/gpt-5.4' },
  openrouter: { legacyKeyVariable: 'OPENROUTER_API_KEY', defaultModel: 'openrouter/auto' },
  google: { legacyKeyVariable: 'GEMINI_API_KEY', defaultModel: 'google/gemini-3.1-pro-preview' },
};

/** A key given without a provider is taken as Anthropic's. */
export const DEFAULT_MODEL_PROVIDER = 'anthropic';

type Path = readonly string[];

/**
 * The fields the controller owns, as paths into the config. Each render sets each one to its
 * desired value or deletes it; nothing outside these paths is ever changed by the controller.
 */
export const OWNED_PATHS: readonly Path[] = [
  ...Object.keys(MODEL_PROVIDER_CONFIG).map((id) => ['models', 'providers', id, 'apiKey']),
  // Always deleted now (see ModelProvider.legacyKeyVariable); removing it costs one in-process
  // restart of a gateway an older render gave an environment key, once.
  ...Object.values(MODEL_PROVIDER_CONFIG).map((provider) => ['env', 'vars', provider.legacyKeyVariable]),
  ['gateway', 'mode'],
  ['gateway', 'port'],
  ['gateway', 'bind'],
  ['gateway', 'auth'],
  ['gateway', 'controlUi', 'allowedOrigins'],
  ['gateway', 'trustedProxies'],
  ['gateway', 'reload', 'mode'],
  ['models', 'providers', GATEWAY_PROVIDER_ID],
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
    const provider = Object.hasOwn(MODEL_PROVIDER_CONFIG, name) ? MODEL_PROVIDER_CONFIG[name] : undefined;
    if (provider === undefined) throw new Error(`unknown model provider "${name}"`);
    config.models = { providers: { [name]: { apiKey: input.modelApiKey } } };
    primaryModel = provider.defaultModel;
  } else if (input.modelAccess) {
    // Bring-your-own-key wins; otherwise the included model through the control plane's gateway,
    // with a credential that is useless anywhere else.
    config.models = { providers: input.modelAccess.providers };
    primaryModel = input.modelAccess.primary;
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

/**
 * `current` (what is on disk, OpenClaw's writes included) with every owned path set to its value
 * in `owned`, or deleted where `owned` has none. Objects that only held an owned field and are
 * left empty are removed; anything else stays exactly as it was. Pure: `current` is not changed.
 */
export function applyOwnedConfig(current: JsonObject, owned: JsonObject): JsonObject {
  return mergeOwnedFields(current, owned, OWNED_PATHS);
}

/**
 * The merge behind `applyOwnedConfig`, over any list of paths. It refers to nothing outside
 * itself, on purpose: the Kubernetes runtime ships this function's own source into each pod's
 * seed step (runtime/kubernetes/pod-scripts.ts), which merges into the openclaw.json on the
 * pod's volume exactly as FileWorkspaces merges on a Docker host.
 */
export function mergeOwnedFields(current: JsonObject, owned: JsonObject, paths: readonly (readonly string[])[]): JsonObject {
  const isObject = (value: unknown): value is JsonObject =>
    typeof value === 'object' && value !== null && !Array.isArray(value);
  const result = structuredClone(current);
  for (const path of paths) {
    let found: unknown = owned;
    for (const key of path) found = isObject(found) && Object.hasOwn(found, key) ? found[key] : undefined;
    const leaf = path[path.length - 1] as string;
    if (found !== undefined) {
      let node = result;
      for (const key of path.slice(0, -1)) {
        // A scalar where we need an object (a hand edit, a corrupt write) gives way: the path is ours.
        if (!isObject(node[key])) node[key] = {};
        node = node[key] as JsonObject;
      }
      node[leaf] = structuredClone(found);
      continue;
    }
    const parents: JsonObject[] = [];
    let node: JsonObject | undefined = result;
    for (const key of path.slice(0, -1)) {
      const next: unknown = node[key];
      parents.push(node);
      node = isObject(next) ? next : undefined;
      if (!node) break;
    }
    if (!node || !Object.hasOwn(node, leaf)) continue;
    delete node[leaf];
    // Prune the objects this deletion emptied, innermost first.
    for (let depth = path.length - 2; depth >= 0 && Object.keys(node).length === 0; depth--) {
      const parent = parents[depth] as JsonObject;
      delete parent[path[depth] as string];
      node = parent;
    }
  }
  return result;
}

/** Only the owned paths of a config, for comparing what is on disk with what is desired. */
export function ownedProjection(config: JsonObject): JsonObject {
  return applyOwnedConfig({}, config);
}
