/**
 * `openclaw.json`, the OpenClaw gateway's configuration. Built as plain data and serialised
 * with JSON.stringify, never by string formatting, so no value (a token, a name) can break out
 * of its field. Keys are added in a fixed order, so equal input gives equal bytes.
 */

export interface OpenClawConfigInput {
  /** Port the gateway listens on inside the container. */
  port: number;
  /** Per-customer gateway token. */
  gatewayToken: string;
  /** The agent's workspace folder as the container sees it. */
  workspacePath: string;
  telegramBotToken?: string | undefined;
  modelProvider?: string | undefined;
  modelApiKey?: string | undefined;
}

/** Environment variable OpenClaw reads each provider's API key from (its `env` config block). */
const PROVIDER_KEY_VARIABLES: Readonly<Record<string, string>> = {
  anthropic: 'ANTHROPIC_API_KEY',
  openai: 'OPENAI_API_KEY',
  openrouter: 'OPENROUTER_API_KEY',
  google: 'GEMINI_API_KEY',
};

/** A key given without a provider is taken as Anthropic's, OpenClaw's default provider. */
export const DEFAULT_MODEL_PROVIDER = 'anthropic';

export function buildOpenClawConfig(input: OpenClawConfigInput): Record<string, unknown> {
  const config: Record<string, unknown> = {};
  if (input.modelApiKey) {
    const provider = input.modelProvider ?? DEFAULT_MODEL_PROVIDER;
    const variable = PROVIDER_KEY_VARIABLES[provider];
    if (variable === undefined) throw new Error(`unknown model provider "${provider}"`);
    config.env = { [variable]: input.modelApiKey };
  }
  config.gateway = {
    mode: 'local',
    port: input.port,
    // `lan` listens on all interfaces inside the container; the host publishes the port on
    // 127.0.0.1 only, so Caddy remains the one way in.
    bind: 'lan',
    auth: { mode: 'token', token: input.gatewayToken },
  };
  config.agents = { defaults: { workspace: input.workspacePath } };
  if (input.telegramBotToken) {
    // `pairing`: strangers who find the bot get a code the owner must approve first.
    config.channels = { telegram: { enabled: true, botToken: input.telegramBotToken, dmPolicy: 'pairing' } };
  }
  return config;
}

export function serializeOpenClawConfig(config: Record<string, unknown>): string {
  return `${JSON.stringify(config, null, 2)}\n`;
}
