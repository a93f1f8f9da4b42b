import { z } from 'zod';
import { isDns1123Label, MAX_NAME_LENGTH } from './naming.js';

/**
 * Glossary
 * - customer: one paying person and their assistant; identified by `name` (a DNS-1123 label).
 * - name: the customer's key (`metadata.name`, `customers.name`, the controller's queue key). A
 *   field or parameter of something else that points at its customer (a container, a route, a
 *   port reservation, an event, the label `cloud.blytz.customer`) is called `customer`. The
 *   person's own name is `displayName` (the signup body's `name` field, contract section 3.1).
 * - desired (state): what writers want, stored as the customer's `spec` (state, instructions, ...).
 * - observed (state): what the world has now: container, route, workspace, port reservation.
 * - action: one idempotent step that moves the world towards the desired state.
 * - plan: the ordered actions for one customer, a pure function of desired and observed.
 * - reconcile: observe, plan, execute, write status, for one customer name.
 * - generation: +1 on every spec change (never on status writes); status.observedGeneration says
 *   which generation the status describes.
 * - drift: the world differs from what the controller last made it (a container killed, a route
 *   deleted by hand); the next reconcile corrects it and counts it.
 * - orphan: a world object carrying our marks with no desired customer behind it; removed.
 */

export const API_VERSION = 'blytz.cloud/v1alpha1';
export const KIND = 'Customer';

export const DESIRED_STATES = ['pending', 'active', 'suspended', 'cancelled'] as const;
export type DesiredState = (typeof DESIRED_STATES)[number];

export const PHASES = [
  'Pending',
  'Provisioning',
  'Ready',
  'Degraded',
  'Suspended',
  'Terminating',
  'Terminated',
  'Failed',
] as const;
export type Phase = (typeof PHASES)[number];

/** Resources a plan grants a customer's container. */
export interface PlanResources {
  memoryBytes: number;
  nanoCpus: number;
  pidsLimit: number;
  /** V8's old-space cap (NODE_OPTIONS=--max-old-space-size) for the gateway and the CLI run beside it. */
  nodeHeapMiB: number;
}

const MiB = 1024 * 1024;

/**
 * Sized from the OpenClaw gateway measured here (docs/benchmarks.md, "The real assistant"): it
 * holds about 0.8 to 1.0 GiB resident idle (its V8 heap about 250 MiB of that), and about 1.4 GiB
 * while a CLI command (a pairing approval) runs beside it in the container; 512 MiB is OOM-killed
 * a second after it listens. It starts in about 20 s at one CPU and about 60 s at half a CPU.
 * The heap cap leaves the rest of the limit to code, workers and the CLI process.
 */
export const PLANS = {
  personal: { memoryBytes: 1536 * MiB, nanoCpus: 1_000_000_000, pidsLimit: 256, nodeHeapMiB: 768 },
  pro: { memoryBytes: 3072 * MiB, nanoCpus: 2_000_000_000, pidsLimit: 512, nodeHeapMiB: 1536 },
} as const satisfies Record<string, PlanResources>;

/**
 * A template's start timeout is its budget at one full CPU; a plan with less CPU starts slower in
 * proportion (the gateway's start is CPU-bound: about 20 s at one CPU, 60 s at half). Counted in
 * whole nano-CPUs, so a fraction such as 0.7 CPU does not round 21 s up to 31 instead of 30.
 */
export function startTimeoutSeconds(atOneCpuSeconds: number, plan: PlanResources): number {
  const ONE_CPU = 1_000_000_000;
  return plan.nanoCpus >= ONE_CPU ? atOneCpuSeconds : Math.ceil((atOneCpuSeconds * ONE_CPU) / plan.nanoCpus);
}
export type PlanName = keyof typeof PLANS;
export const PLAN_NAMES = Object.keys(PLANS) as [PlanName, ...PlanName[]];

export const MODEL_PROVIDERS = ['anthropic', 'openai', 'openrouter', 'google'] as const;

/** `<digits>:<35 url-safe characters>`, the shape BotFather hands out. */
export const BOT_TOKEN = /^\d{5,12}:[A-Za-z0-9_-]{35}$/;

// NUL and other control characters have no business in any field (newlines and tabs aside):
// C0, DEL and the C1 block, plus the bidirectional overrides and isolates that make text display
// differently from what it is ("Trojan Source").
const CONTROL_CHARS = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]/;
const safeText = (max: number) =>
  z
    .string()
    .max(max, `must be at most ${max} characters`)
    .refine((s) => !CONTROL_CHARS.test(s), 'must not contain control characters');

export const customerNameSchema = z
  .string()
  .max(MAX_NAME_LENGTH, `must be at most ${MAX_NAME_LENGTH} characters`)
  .refine(
    isDns1123Label,
    'must be a DNS-1123 label: lowercase letters, digits and -, starting and ending with a letter or digit',
  );

export const botTokenSchema = z.string().max(100).regex(BOT_TOKEN, 'must look like 123456789:<35 letters, digits, _ or ->');

export const modelApiKeySchema = safeText(500).min(1);

const secretRefSchema = z.object({ name: customerNameSchema, key: safeText(253).min(1) }).strict();

export const customerSpecSchema = z
  .object({
    email: z.email('must be an email address').max(254, 'must be at most 254 characters'),
    displayName: safeText(50).pipe(z.string().trim().min(1, 'must not be empty')),
    plan: z.enum(PLAN_NAMES).default('personal'),
    template: z
      .string()
      .max(63)
      .regex(/^[a-z0-9][a-z0-9-]*$/, 'must be a template folder name')
      .default('personal-assistant'),
    state: z.enum(DESIRED_STATES).default('active'),
    instructions: safeText(5000).default(''),
    telegram: z
      .object({
        botToken: botTokenSchema.optional(),
        botTokenSecretRef: secretRefSchema.optional(),
        // Read-only marker in API output ("a token is stored"); ignored on input.
        botTokenSet: z.boolean().optional(),
      })
      .strict()
      .optional(),
    model: z
      .object({
        provider: z.enum(MODEL_PROVIDERS).optional(),
        apiKey: modelApiKeySchema.optional(),
        apiKeySecretRef: secretRefSchema.optional(),
        apiKeySet: z.boolean().optional(),
      })
      .strict()
      .optional(),
    paused: z.boolean().default(false),
  })
  .strict();

export type CustomerSpecInput = z.input<typeof customerSpecSchema>;
export type CustomerSpecParsed = z.output<typeof customerSpecSchema>;

const labelsSchema = z
  .record(
    z
      .string()
      .max(63)
      .regex(/^([a-z0-9.-]+\/)?[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?$/, 'label keys must be qualified names'),
    z
      .string()
      .max(63)
      .regex(/^([A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?)?$/, 'label values must be simple names'),
  )
  .refine((r) => Object.keys(r).length <= 32, 'at most 32 labels');

export const customerManifestSchema = z
  .object({
    apiVersion: z.literal(API_VERSION, { error: `must be ${API_VERSION}` }),
    kind: z.literal(KIND, { error: `must be ${KIND}` }),
    metadata: z
      .object({
        name: customerNameSchema,
        labels: labelsSchema.optional(),
        // Optimistic concurrency: when given, apply fails if the stored object moved on.
        resourceVersion: z.string().regex(/^\d+$/).optional(),
        // Set by the store; accepted so `get -o yaml` output applies again, otherwise ignored.
        generation: z.number().optional(),
        creationTimestamp: z.string().optional(),
        namespace: z.string().optional(),
        uid: z.string().optional(),
        annotations: z.record(z.string(), z.string()).optional(),
      })
      .strict(),
    spec: customerSpecSchema,
    // Status belongs to the controller: accepted in a manifest and ignored.
    status: z.unknown().optional(),
  })
  .strict();

export type CustomerManifest = z.output<typeof customerManifestSchema>;

/** What the store writes: the spec with its secrets still in plaintext (encrypted by the store). */
export interface DesiredCustomer {
  name: string;
  labels: Record<string, string>;
  spec: CustomerSpecParsed;
}

export interface FieldError {
  field: string;
  message: string;
}

export class ValidationError extends Error {
  constructor(readonly causes: FieldError[]) {
    super(causes.map((c) => `${c.field}: ${c.message}`).join('; '));
    this.name = 'ValidationError';
  }
}

/** Turns zod issues into `{field, message}` pairs with dotted paths (`spec.telegram.botToken`). */
export function fieldErrors(error: z.ZodError, prefix = ''): FieldError[] {
  const field = (path: readonly PropertyKey[]) => [prefix, path.map(String).join('.')].filter(Boolean).join('.') || '(root)';
  return error.issues.flatMap((issue) => {
    // One cause per unknown field, named by its own path (`spec.foo`), like Kubernetes' strict decoding.
    if (issue.code === 'unrecognized_keys') {
      return issue.keys.map((key) => ({ field: field([...issue.path, key]), message: 'unknown field' }));
    }
    let message = issue.message;
    if (issue.code === 'invalid_type' && issue.input === undefined) message = 'is required';
    return [{ field: field(issue.path), message }];
  });
}

export function parseManifest(input: unknown): CustomerManifest {
  const parsed = customerManifestSchema.safeParse(input);
  if (!parsed.success) throw new ValidationError(fieldErrors(parsed.error));
  return parsed.data;
}

export type ConditionStatus = 'True' | 'False' | 'Unknown';
export const CONDITION_TYPES = ['WorkspaceReady', 'ContainerReady', 'RouteReady', 'Ready'] as const;
export type ConditionType = (typeof CONDITION_TYPES)[number] | 'Paused' | 'BillingWarning' | 'ModelReady';

/** metav1.Condition. */
export interface Condition {
  type: string;
  status: ConditionStatus;
  reason: string;
  message: string;
  lastTransitionTime: string;
  observedGeneration: number;
}

export interface CustomerStatus {
  phase?: Phase;
  observedGeneration?: number;
  url?: string;
  hostPort?: number;
  conditions?: Condition[];
}

export interface BillingInfo {
  stripeCustomerId?: string;
  stripeSubscriptionId?: string;
  stripeCheckoutSessionId?: string;
}

/** A customer as read from the store: spec without secret values, plus controller-owned status. */
export interface Customer {
  name: string;
  labels: Record<string, string>;
  generation: number;
  resourceVersion: string;
  createdAt: Date;
  updatedAt: Date;
  cancelledAt: Date | null;
  spec: CustomerSpecView;
  status: CustomerStatus;
  billing: BillingInfo;
}

/** The spec as it may be shown: secrets replaced by "is set" flags. */
export interface CustomerSpecView {
  email: string;
  displayName: string;
  plan: PlanName;
  template: string;
  state: DesiredState;
  instructions: string;
  telegram: { botTokenSet: boolean; botTokenSecretRef?: { name: string; key: string } };
  model: { provider?: string; apiKeySet: boolean; apiKeySecretRef?: { name: string; key: string } };
  paused: boolean;
}

export function toManifest(customer: Customer): Record<string, unknown> {
  return {
    apiVersion: API_VERSION,
    kind: KIND,
    metadata: {
      name: customer.name,
      labels: customer.labels,
      generation: customer.generation,
      resourceVersion: customer.resourceVersion,
      creationTimestamp: customer.createdAt.toISOString(),
    },
    spec: customer.spec,
    status: { ...customer.status, billing: customer.billing },
  };
}
