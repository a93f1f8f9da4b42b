/**
 * The part of a customer's `openclaw.json` that gives its assistant the platform's included model
 * access: one provider, `blytz`, whose `baseUrl` is the control plane's model gateway and whose
 * `apiKey` is the customer's own model credential, and the agents' primary model on it. Pure
 * data; the caller merges it into the config it builds (see `workspace/openclaw-config.ts`).
 *
 * In OpenClaw 2026.9.6's schema: `models.providers.<id>` takes `baseUrl`, `apiKey`, `api` (the
 * request adapter: `openai-completions`, `openai-responses`, `anthropic-messages`, ...) and
 * `models` (entries need `id` and `name`); `agents.defaults.model.primary` names `<provider>/<id>`.
 * The OpenAI SDK appends `/chat/completions` to its base URL and the Anthropic SDK
 * `/v1/messages`, hence the two base URL shapes.
 */

/** The provider id in openclaw.json; the primary model is `blytz/<model id>`. */
export const GATEWAY_PROVIDER_ID = 'blytz';

export interface ModelAccessInput {
  /** Where customer containers reach the gateway, e.g. `http://172.30.0.1:8090` (BLYTZ_MODEL_GATEWAY_URL). */
  gatewayUrl: string;
  /** The customer's model credential (`ModelCredentials.ensure`). */
  credential: string;
  /** The platform model, `<openai|anthropic>/<model id>` (BLYTZ_MODEL_DEFAULT). */
  model: string;
}

export interface OpenClawProvider {
  baseUrl: string;
  apiKey: string;
  api: 'openai-completions' | 'anthropic-messages';
  models: Array<{ id: string; name: string; compat?: { supportsUsageInStreaming: boolean } }>;
}

export interface ModelAccessFragment {
  /** Goes to `models.providers` (merged with any other providers). */
  providers: Record<typeof GATEWAY_PROVIDER_ID, OpenClawProvider>;
  /** Goes to `agents.defaults.model.primary`. */
  primary: string;
}

/** `openai/gpt-5-mini` -> provider `openai`, id `gpt-5-mini`; throws for another provider or shape. */
export function splitModel(model: string): { provider: 'openai' | 'anthropic'; id: string } {
  const slash = model.indexOf('/');
  const provider = model.slice(0, slash);
  const id = model.slice(slash + 1);
  if (slash <= 0 || id === '' || (provider !== 'openai' && provider !== 'anthropic')) {
    throw new Error(`model "${model}" must be openai/<model> or anthropic/<model>`);
  }
  return { provider, id };
}

export function modelAccessConfig(input: ModelAccessInput): ModelAccessFragment {
  const { provider, id } = splitModel(input.model);
  const gateway = input.gatewayUrl.replace(/\/+$/, '');
  const name = `${id} (included with Blytz)`;
  const entry: OpenClawProvider =
    provider === 'openai'
      ? {
          baseUrl: `${gateway}/openai/v1`,
          apiKey: input.credential,
          api: 'openai-completions',
          // The gateway asks for usage in streams anyway (it meters from it); saying so keeps
          // OpenClaw's own token counts right too.
          models: [{ id, name, compat: { supportsUsageInStreaming: true } }],
        }
      : { baseUrl: `${gateway}/anthropic`, apiKey: input.credential, api: 'anthropic-messages', models: [{ id, name }] };
  return { providers: { [GATEWAY_PROVIDER_ID]: entry }, primary: `${GATEWAY_PROVIDER_ID}/${id}` };
}
