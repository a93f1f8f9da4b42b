import type { Config } from '../config.js';

/**
 * Whether this server offers included model access ("Blytz default" on the signup page): a
 * customer without a model key of their own reaches a model only through the model gateway, so
 * it is offered only when the gateway runs, that is when it has an address to listen on
 * (BLYTZ_MODEL_GATEWAY_LISTEN) and the platform's key for the default model's provider. Without
 * either, a customer who kept the default would pay for an assistant that cannot answer: signup
 * then asks for a key of the customer's own, and customers already on included access show a
 * ModelReady=False condition. Pure: the one place this is decided.
 */

export type IncludedModelConfig = Pick<
  Config,
  'BLYTZ_MODEL_GATEWAY_LISTEN' | 'BLYTZ_MODEL_DEFAULT' | 'BLYTZ_OPENAI_API_KEY' | 'BLYTZ_ANTHROPIC_API_KEY'
>;

export type IncludedModelAccess = { offered: true } | { offered: false; reason: string };

export const INCLUDED_ACCESS_OFFERED: IncludedModelAccess = { offered: true };

/** The environment variable holding the platform's key for a model `<provider>/<id>`. */
export function platformKeyVariable(model: string): 'BLYTZ_OPENAI_API_KEY' | 'BLYTZ_ANTHROPIC_API_KEY' {
  return model.startsWith('openai/') ? 'BLYTZ_OPENAI_API_KEY' : 'BLYTZ_ANTHROPIC_API_KEY';
}

export function includedModelAccess(config: IncludedModelConfig): IncludedModelAccess {
  if (!config.BLYTZ_MODEL_GATEWAY_LISTEN) {
    return { offered: false, reason: 'the model gateway is off (BLYTZ_MODEL_GATEWAY_LISTEN is unset)' };
  }
  const key = platformKeyVariable(config.BLYTZ_MODEL_DEFAULT);
  if (!config[key]) {
    return {
      offered: false,
      reason: `the model gateway has no platform key for BLYTZ_MODEL_DEFAULT=${config.BLYTZ_MODEL_DEFAULT} (${key} or ${key}_FILE is unset)`,
    };
  }
  return INCLUDED_ACCESS_OFFERED;
}

/** A customer relies on included access when it brings no model key of its own (inline or as a Secret). */
export function reliesOnIncludedAccess(model: { apiKeySet?: boolean; apiKeySecretRef?: unknown }): boolean {
  return !model.apiKeySet && model.apiKeySecretRef === undefined;
}

/**
 * What an operator is told when a customer is applied that will have no model: no key of its
 * own where included access is not offered (the admin API's `Warning` header, printed by
 * `blytz apply` as kubectl prints an API server's warnings). Undefined when it will have one, or
 * runs nothing that needs one.
 */
export function noModelWarning(
  customer: { name: string; spec: { state: string; model: { apiKeySet?: boolean; apiKeySecretRef?: unknown } } },
  included: IncludedModelAccess,
): string | undefined {
  if (included.offered || customer.spec.state === 'cancelled' || !reliesOnIncludedAccess(customer.spec.model)) return undefined;
  return `customer/${customer.name} has no model key of its own and this server does not offer included model access (${included.reason}): its assistant will have no model until spec.model has a key or the model gateway serves`;
}
