import { botTokenSchema, modelApiKeySchema, parseManifest, type CustomerManifest, type CustomerSpecInput } from '../domain/customer.js';
import type { KubeObject } from '../kube-api/client.js';
import { CUSTOMER_GROUP, CUSTOMER_VERSION } from './crd.js';
import type { SpecProblem } from './customer-status.js';

/**
 * From a Customer resource to the spec the store takes: the resource's spec with every
 * referenced secret (bot token, model API key) read from its Secret and validated like an
 * inline value, then parsed as a manifest. No store, no status: `CustomerResourceSource` writes
 * the result, `CustomerResourceWriter` shows problems on the resource.
 */

/** The secrets a Customer resource may reference instead of holding: `spec.<section>.<ref>` fills `<field>`. */
export const SECRET_REFERENCES = [
  { section: 'telegram', ref: 'botTokenSecretRef', field: 'botToken', schema: botTokenSchema, holds: 'a Telegram bot token' },
  { section: 'model', ref: 'apiKeySecretRef', field: 'apiKey', schema: modelApiKeySchema, holds: 'a model API key' },
] as const;

/** Reads one key of a Secret in the resource's namespace: its value, or why there is none. */
export type SecretKeyReader = (secret: string, key: string) => Promise<{ value?: string; problem: string }>;

/**
 * The resource's spec with each referenced secret filled in from its Secret, or the problem that
 * stops it (a missing Secret or key, a value that is no token). The value itself never reaches
 * a message.
 */
export async function resolveSecretRefs(
  object: KubeObject,
  readSecretKey: SecretKeyReader,
): Promise<{ spec: CustomerSpecInput } | { problem: SpecProblem }> {
  const spec = structuredClone((object.spec ?? {}) as Record<string, unknown>);
  for (const secret of SECRET_REFERENCES) {
    const section = spec[secret.section] as Record<string, unknown> | undefined;
    const ref = section?.[secret.ref] as { name?: unknown; key?: unknown } | undefined;
    if (!section || !ref || typeof ref.name !== 'string' || typeof ref.key !== 'string') continue;
    const found = await readSecretKey(ref.name, ref.key);
    if (found.value === undefined) return { problem: { reason: 'SecretNotFound', message: found.problem, retry: true } };
    const checked = secret.schema.safeParse(found.value);
    if (!checked.success) {
      return {
        problem: {
          reason: 'InvalidSecret',
          message: `Secret ${ref.name} key ${ref.key} does not hold ${secret.holds} (${checked.error.issues.map((i) => i.message).join('; ')})`,
          retry: true,
        },
      };
    }
    section[secret.field] = found.value;
  }
  return { spec: spec as CustomerSpecInput };
}

/** The manifest the store applies; throws the domain's ValidationError for an invalid spec. */
export function manifestOf(name: string, object: KubeObject, spec: CustomerSpecInput): CustomerManifest {
  return parseManifest({
    apiVersion: `${CUSTOMER_GROUP}/${CUSTOMER_VERSION}`,
    kind: 'Customer',
    metadata: { name, ...(object.metadata?.labels ? { labels: object.metadata.labels } : {}) },
    spec,
  });
}

/**
 * A secret written into the resource itself is accepted (the same manifest applies with
 * `blytz apply`), but it sits in etcd unencrypted and in every `kubectl get -o yaml`: the warning
 * that says so and names the reference to use, or undefined when every secret is referenced.
 */
export function inlineSecretWarning(object: KubeObject): string | undefined {
  const spec = (object.spec ?? {}) as Record<string, Record<string, unknown> | undefined>;
  const inline = SECRET_REFERENCES.filter((s) => spec[s.section]?.[s.field] !== undefined);
  if (inline.length === 0) return undefined;
  const fields = inline.map((s) => `spec.${s.section}.${s.field}`).join(' and ');
  const refs = inline.map((s) => `spec.${s.section}.${s.ref}`).join(' and ');
  const them = inline.length > 1 ? 'them' : 'it';
  return `the resource holds ${fields} in plain text (unencrypted in etcd, shown by kubectl get -o yaml): put ${them} in a Secret and use ${refs}`;
}
