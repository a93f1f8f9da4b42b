import { PLANS, startTimeoutSeconds } from '../../domain/customer.js';
import { stableHash } from '../../domain/canonical-json.js';
import { customerHost } from '../../domain/naming.js';
import type { ContainerSpec } from '../../runtime/runtime.js';
import type { ControllerStore, ReconcileView } from '../../store/store.js';
import type { ModelAccessFragment } from '../../workspace/model-access-config.js';
import type { RenderedWorkspace, TemplateManifest, Workspaces } from '../../workspace/workspace.js';
import type { Desired } from './plan.js';

export interface DesiredDefaults {
  baseDomain: string;
  customerImage: string;
  containerPort: number;
  /** The origins a customer's host is served on, e.g. `https://<host>` (see publicOrigins in naming.ts). */
  publicOrigins: (host: string) => string[];
  /** The addresses requests from the proxy reach the assistant from (OpenClaw's trusted proxies). */
  trustedProxies: string[];
  /** Telegram Bot API root when it is not Telegram's own (TELEGRAM_API_BASE). */
  telegramApiRoot?: string | undefined;
  /** Overrides every template's start timeout (tests use a few seconds). */
  startTimeoutSeconds?: number | undefined;
}

/** The desired customer resolved against its template: what the planner and executor need. */
export interface ResolvedCustomer {
  desired: Desired;
  template: TemplateManifest | undefined;
  rendered: RenderedWorkspace | undefined;
  /** The container to run, on the given host port (`next`: a blue-green update's new container). */
  containerSpec(hostPort: number, slot?: 'next'): ContainerSpec;
  /** What a fleet rollout needs to know about this customer (only for states that run something). */
  fleet?: FleetInputs;
}

/** The fleet-wide inputs of a customer's container: what a rollout paces and shows. */
export interface FleetInputs {
  /** Rollouts are kept per template and plan: `<template>/<plan>`. */
  key: string;
  /** Hash of the fleet-wide inputs (image, port, user, mount path, env, plan limits, health path). */
  fingerprint: string;
  image: string;
  startTimeoutSeconds: number;
  updateStrategy: 'recreate' | 'blueGreen';
}

/** The template is missing or invalid: no retry helps until an operator fixes it. */
export class TemplateError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TemplateError';
  }
}

/**
 * Renders what the customer should have. Only states that run something need the template,
 * the secrets and the rendered workspace; pending and cancelled customers need only names.
 */
export async function resolveCustomer(
  view: ReconcileView,
  deps: {
    store: Pick<ControllerStore, 'gatewayToken'>;
    workspaces: Workspaces;
    defaults: DesiredDefaults;
    /** The included model's openclaw.json fragment (a per-customer credential), when the model gateway is on. */
    modelAccess?: ((name: string) => Promise<ModelAccessFragment | undefined>) | undefined;
  },
  /** Run this image instead (a rollout rolling the customer back to its previous image). */
  imageOverride?: string,
): Promise<ResolvedCustomer> {
  const { customer, secrets } = view;
  const base: Desired = {
    name: customer.name,
    generation: customer.generation,
    state: customer.spec.state,
    paused: customer.spec.paused,
    cancelledAtMs: customer.cancelledAt ? customer.cancelledAt.getTime() : null,
    specHash: '',
    workspaceHash: '',
    host: customerHost(customer.name, deps.defaults.baseDomain),
  };
  const runs = customer.spec.state === 'active' || customer.spec.state === 'suspended';
  if (!runs || customer.spec.paused) {
    return {
      desired: base,
      template: undefined,
      rendered: undefined,
      containerSpec: () => {
        throw new Error('nothing runs in this state');
      },
    };
  }

  let template: TemplateManifest;
  try {
    template = await deps.workspaces.loadTemplate(customer.spec.template);
  } catch (error) {
    throw new TemplateError(`template ${customer.spec.template}: ${(error as Error).message}`, { cause: error });
  }
  const gatewayToken = view.gatewayToken ?? (await deps.store.gatewayToken(customer.name));
  // A customer with a key of their own goes straight to their provider, never through the gateway.
  const modelAccess = secrets.modelApiKey ? undefined : await deps.modelAccess?.(customer.name);
  const rendered = await deps.workspaces.render({
    customer: customer.name,
    email: customer.spec.email,
    displayName: customer.spec.displayName,
    instructions: customer.spec.instructions,
    plan: customer.spec.plan,
    template: customer.spec.template,
    modelProvider: customer.spec.model.provider,
    publicOrigins: deps.defaults.publicOrigins(base.host),
    trustedProxies: deps.defaults.trustedProxies,
    telegramApiRoot: deps.defaults.telegramApiRoot,
    modelAccess,
    secrets: { telegramBotToken: secrets.telegramBotToken, modelApiKey: secrets.modelApiKey, gatewayToken },
  });

  const image = imageOverride ?? template.image ?? deps.defaults.customerImage;
  const containerPort = template.containerPort ?? deps.defaults.containerPort;
  const mounts = deps.workspaces.mounts(customer.name, template);
  const resources = PLANS[customer.spec.plan];
  const env = { ...template.env, NODE_OPTIONS: `--max-old-space-size=${resources.nodeHeapMiB}` };
  const startTimeout = deps.defaults.startTimeoutSeconds ?? startTimeoutSeconds(template.startTimeoutSeconds, resources);
  // Everything that needs a new container when it changes. The host port is compared on its own
  // (a moved port also needs a new container). The rendered files are not here: the assistant
  // rereads its Markdown files, and the gateway reloads openclaw.json in place (hot where it can,
  // an in-process restart where a key needs one), so neither needs a new container.
  const specHash = stableHash({
    image,
    containerPort,
    user: template.user,
    mounts,
    env,
    resources,
    probes: template.probes,
    tmpfs: template.tmpfs,
    startTimeout,
  });
  // The customer's own inputs in the spec hash (what openclaw.json is made of, the plan and the
  // template they chose). With it the same and the spec hash changed, the change is fleet-wide.
  const ownHash = stableHash({
    plan: customer.spec.plan,
    template: customer.spec.template,
    telegramBotToken: secrets.telegramBotToken ?? null,
    modelProvider: customer.spec.model.provider ?? null,
    modelApiKey: secrets.modelApiKey ?? null,
    gatewayToken,
  });
  const desired: Desired = {
    ...base,
    specHash,
    workspaceHash: rendered.contentHash,
    ownHash,
    updateStrategy: template.updateStrategy,
    // Unknown (left out) where this controller is given no model access to manage (some tests).
    ...(secrets.modelApiKey
      ? { modelSource: 'own-key' as const }
      : deps.modelAccess
        ? { modelSource: modelAccess ? ('included' as const) : ('none' as const) }
        : {}),
  };
  const fleet: FleetInputs = {
    key: `${customer.spec.template}/${customer.spec.plan}`,
    fingerprint: stableHash({
      image,
      containerPort,
      user: template.user,
      mountPath: template.mountPath,
      env,
      resources,
      probes: template.probes,
      tmpfs: template.tmpfs,
    }),
    image,
    startTimeoutSeconds: startTimeout,
    updateStrategy: template.updateStrategy,
  };
  return {
    desired,
    template,
    rendered,
    fleet,
    containerSpec: (hostPort, slot) => ({
      customer: customer.name,
      image,
      containerPort,
      hostPort,
      user: template.user,
      mounts,
      env,
      resources,
      probes: template.probes,
      startTimeoutSeconds: startTimeout,
      tmpfs: template.tmpfs,
      specHash,
      ownHash,
      generation: customer.generation,
      updateStrategy: template.updateStrategy,
      ...(slot === 'next' ? { slot } : {}),
    }),
  };
}
