import { PLANS, startTimeoutSeconds, type PlanName, type PlanResources } from '../../domain/customer.js';
import { stableHash } from '../../domain/canonical-json.js';
import { customerHost } from '../../domain/naming.js';
import { poolFolderName, poolSlotKey } from '../../domain/pool.js';
import type { ContainerSpec } from '../../runtime/runtime.js';
import type { ControllerStore, ReconcileView } from '../../store/store.js';
import type { ModelAccessFragment } from '../../workspace/model-access-config.js';
import type { Mount, RenderedWorkspace, TemplateManifest, Workspaces } from '../../workspace/workspace.js';
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
  /** The customer's gateway token (only for states that run something): what its assistant answers to. */
  gatewayToken?: string;
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

/** What a container of a template on a plan runs, whoever it is for (a customer, a pool slot). */
interface ContainerParts {
  image: string;
  containerPort: number;
  mounts: Mount[];
  env: Record<string, string>;
  resources: PlanResources;
  startTimeout: number;
  /** Everything that needs a new container when it changes (the owner's mounts included). */
  specHash: string;
  /** The fleet-wide inputs alone (no mount sources): equal for every container of the template and plan. */
  fingerprint: string;
}

function containerParts(
  template: TemplateManifest,
  plan: PlanName,
  defaults: DesiredDefaults,
  mounts: Mount[],
  imageOverride?: string,
): ContainerParts {
  const image = imageOverride ?? template.image ?? defaults.customerImage;
  const containerPort = template.containerPort ?? defaults.containerPort;
  const resources = PLANS[plan];
  const env = { ...template.env, NODE_OPTIONS: `--max-old-space-size=${resources.nodeHeapMiB}` };
  const startTimeout = defaults.startTimeoutSeconds ?? startTimeoutSeconds(template.startTimeoutSeconds, resources);
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
  // Also what makes a warm pool slot fit a customer: the same image, limits and template, so
  // the slot's container counts as what the customer's own would have been (see pool-binding.ts).
  const fingerprint = stableHash({
    image,
    containerPort,
    user: template.user,
    mountPath: template.mountPath,
    env,
    resources,
    probes: template.probes,
    tmpfs: template.tmpfs,
  });
  return { image, containerPort, mounts, env, resources, startTimeout, specHash, fingerprint };
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

  const parts = containerParts(template, customer.spec.plan, deps.defaults, deps.workspaces.mounts(customer.name, template), imageOverride);
  const { image, containerPort, mounts, env, resources, startTimeout, specHash } = parts;
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
    fingerprint: parts.fingerprint,
    image,
    startTimeoutSeconds: startTimeout,
    updateStrategy: template.updateStrategy,
  };
  return {
    desired,
    template,
    rendered,
    fleet,
    gatewayToken,
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

/** A warm pool slot resolved against its template: what the pool controller makes (see domain/pool.ts). */
export interface ResolvedSlot {
  /** The fleet fingerprint a customer must have to claim it. */
  fingerprint: string;
  rendered: RenderedWorkspace;
  containerSpec(hostPort: number): ContainerSpec;
}

/** The own hash a slot's container carries: never a customer's, so an unclaimed use of it reads as the customer's own change. */
export const POOL_OWN_HASH = 'pool-slot';

/** The fleet fingerprint the slots of a pool of `template` on `plan` carry (what a customer's must equal to claim one). */
export async function poolFingerprint(
  plan: PlanName,
  templateName: string,
  deps: { workspaces: Pick<Workspaces, 'loadTemplate'>; defaults: DesiredDefaults },
): Promise<string> {
  const template = await loadPoolTemplate(templateName, deps.workspaces);
  return containerParts(template, plan, deps.defaults, []).fingerprint;
}

/**
 * A slot of a pool: the template rendered with no customer in it (the placeholders' neutral
 * defaults, no bot, no model, no origins, the slot's own token), run exactly as a customer of the
 * plan would be, in the slot's folder under the pool's. A claim later writes the customer's
 * configuration over it, and the gateway takes it in place.
 */
export async function resolvePoolSlot(
  slot: { id: number; plan: PlanName; template: string; token: string },
  deps: { workspaces: Workspaces; defaults: DesiredDefaults },
): Promise<ResolvedSlot> {
  const template = await loadPoolTemplate(slot.template, deps.workspaces);
  const folder = poolFolderName(slot.id);
  const rendered = await deps.workspaces.render({
    customer: folder,
    email: '',
    displayName: '',
    instructions: '',
    plan: slot.plan,
    template: slot.template,
    publicOrigins: [],
    trustedProxies: deps.defaults.trustedProxies,
    secrets: { gatewayToken: slot.token },
  });
  const parts = containerParts(template, slot.plan, deps.defaults, deps.workspaces.mounts(folder, template));
  return {
    fingerprint: parts.fingerprint,
    rendered,
    containerSpec: (hostPort) => ({
      customer: poolSlotKey(slot.id),
      poolSlot: slot.id,
      image: parts.image,
      containerPort: parts.containerPort,
      hostPort,
      user: template.user,
      mounts: parts.mounts,
      env: parts.env,
      resources: parts.resources,
      probes: template.probes,
      startTimeoutSeconds: parts.startTimeout,
      tmpfs: template.tmpfs,
      specHash: parts.specHash,
      ownHash: POOL_OWN_HASH,
      updateStrategy: template.updateStrategy,
    }),
  };
}

async function loadPoolTemplate(name: string, workspaces: Pick<Workspaces, 'loadTemplate'>): Promise<TemplateManifest> {
  try {
    return await workspaces.loadTemplate(name);
  } catch (error) {
    throw new TemplateError(`template ${name}: ${(error as Error).message}`, { cause: error });
  }
}
