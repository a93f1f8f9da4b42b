import { z } from 'zod';
import { API_VERSION, customerSpecSchema, KIND, PHASES } from '../domain/customer.js';
import { MAX_NAME_LENGTH } from '../domain/naming.js';

/**
 * The Customer CustomResourceDefinition, generated from the domain's zod schema so the two never
 * drift: `deploy/kubernetes/crd-customer.yaml` is this object as YAML (scripts/gen-crd.mjs writes
 * it; test/unit/kubernetes-crd.test.ts fails when the file and this function disagree, and checks
 * that both accept and reject the same manifests).
 *
 * zod's JSON Schema is turned into a Kubernetes *structural* schema:
 * - `additionalProperties: false` is not allowed there; unknown fields are pruned instead, and
 *   rejected outright by kubectl's strict field validation (the default since Kubernetes 1.27),
 *   which is what `.strict()` means in the domain schema;
 * - `propertyNames`, `const` and `$schema` are dropped (metadata and apiVersion/kind are the API
 *   server's own business; label rules there are the same as the domain's);
 * - refinements zod cannot express (DNS-1123 names, "no control characters", "not blank") are
 *   added by path as RE2 patterns (Kubernetes compiles `pattern` with Go's regexp: `\x{HHHH}`,
 *   not `\uHHHH`).
 */

export const CUSTOMER_GROUP = 'blytz.cloud';
export const CUSTOMER_VERSION = 'v1alpha1';
export const CUSTOMER_PLURAL = 'customers';
export const CUSTOMER_SINGULAR = 'customer';
export const CUSTOMER_FINALIZER = 'blytz.cloud/teardown';

if (API_VERSION !== `${CUSTOMER_GROUP}/${CUSTOMER_VERSION}`)
  throw new Error('CRD group/version must match the domain API_VERSION');

type Json = Record<string, unknown>;

/** DNS-1123 label (domain/naming.ts DNS1123_LABEL); the length cap is a separate maxLength. */
export const DNS1123_LABEL_PATTERN = '^[a-z0-9]([-a-z0-9]*[a-z0-9])?$';

// The domain's CONTROL_CHARS (C0 but tab/newline/CR, DEL, C1, bidi overrides and isolates), as RE2.
const CONTROL_CLASS = String.raw`\x{0}-\x{8}\x{b}\x{c}\x{e}-\x{1f}\x{7f}-\x{9f}\x{202a}-\x{202e}\x{2066}-\x{2069}`;
// What JavaScript's String.prototype.trim removes (zod's .trim()), as RE2.
const TRIMMED_CLASS = String.raw`\x{9}-\x{d}\x{20}\x{a0}\x{1680}\x{2000}-\x{200a}\x{2028}\x{2029}\x{202f}\x{205f}\x{3000}\x{feff}`;

export const NO_CONTROL_CHARS_PATTERN = `^[^${CONTROL_CLASS}]*$`;
export const NOT_BLANK_NO_CONTROL_CHARS_PATTERN = `^[^${CONTROL_CLASS}]*[^${CONTROL_CLASS}${TRIMMED_CLASS}][^${CONTROL_CLASS}]*$`;

/** Patterns for the refinements of the domain schema, by path under `spec` (`*` = any key). */
export const SPEC_REFINEMENTS: Readonly<Record<string, string>> = {
  displayName: NOT_BLANK_NO_CONTROL_CHARS_PATTERN,
  instructions: NO_CONTROL_CHARS_PATTERN,
  'telegram.botTokenSecretRef.name': DNS1123_LABEL_PATTERN,
  'telegram.botTokenSecretRef.key': NO_CONTROL_CHARS_PATTERN,
  'model.apiKey': NO_CONTROL_CHARS_PATTERN,
  'model.apiKeySecretRef.name': DNS1123_LABEL_PATTERN,
  'model.apiKeySecretRef.key': NO_CONTROL_CHARS_PATTERN,
};

/** The OpenAPI v3 schema of `spec`, from the zod schema. */
export function specOpenApiSchema(): Json {
  const jsonSchema = z.toJSONSchema(customerSpecSchema, { io: 'input', unrepresentable: 'throw' }) as Json;
  return structural(jsonSchema, []);
}

function structural(schema: Json, path: string[]): Json {
  const out: Json = {};
  for (const [key, value] of Object.entries(schema)) {
    switch (key) {
      case '$schema':
      case 'propertyNames':
      case 'const':
        break;
      case 'additionalProperties':
        if (value !== false) out[key] = structural(value as Json, [...path, '*']);
        break;
      case 'properties':
        out[key] = Object.fromEntries(
          Object.entries(value as Record<string, Json>).map(([name, child]) => [name, structural(child, [...path, name])]),
        );
        break;
      default:
        out[key] = value;
    }
  }
  const refinement = SPEC_REFINEMENTS[path.join('.')];
  if (refinement !== undefined) {
    if (out['pattern'] === undefined) out['pattern'] = refinement;
    else out['allOf'] = [...((out['allOf'] as Json[] | undefined) ?? []), { pattern: refinement }];
  }
  return out;
}

const conditionSchema: Json = {
  type: 'object',
  required: ['type', 'status', 'reason', 'message', 'lastTransitionTime'],
  properties: {
    type: { type: 'string', maxLength: 316 },
    status: { type: 'string', enum: ['True', 'False', 'Unknown'] },
    reason: { type: 'string', maxLength: 1024 },
    message: { type: 'string', maxLength: 32768 },
    lastTransitionTime: { type: 'string', format: 'date-time' },
    observedGeneration: { type: 'integer', format: 'int64', minimum: 0 },
  },
};

/** The status the controller writes (domain CustomerStatus, with the CR's own generations). */
export const STATUS_SCHEMA: Json = {
  type: 'object',
  properties: {
    phase: { type: 'string', enum: [...PHASES] },
    observedGeneration: { type: 'integer', format: 'int64', minimum: 0 },
    url: { type: 'string' },
    hostPort: { type: 'integer', minimum: 1, maximum: 65535 },
    conditions: {
      type: 'array',
      items: conditionSchema,
      'x-kubernetes-list-type': 'map',
      'x-kubernetes-list-map-keys': ['type'],
    },
  },
};

export function customerCrd(): Json {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: {
      name: `${CUSTOMER_PLURAL}.${CUSTOMER_GROUP}`,
      labels: { 'app.kubernetes.io/name': 'blytz', 'app.kubernetes.io/component': 'crd' },
    },
    spec: {
      group: CUSTOMER_GROUP,
      scope: 'Namespaced',
      names: { kind: KIND, listKind: `${KIND}List`, plural: CUSTOMER_PLURAL, singular: CUSTOMER_SINGULAR, shortNames: ['cust'] },
      versions: [
        {
          name: CUSTOMER_VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: [
            { name: 'State', type: 'string', jsonPath: '.spec.state' },
            { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
            { name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
            { name: 'URL', type: 'string', jsonPath: '.status.url' },
            { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
          ],
          schema: {
            openAPIV3Schema: {
              type: 'object',
              description: 'A Blytz customer: one person and their personal assistant (contract section 4).',
              required: ['spec'],
              properties: {
                apiVersion: { type: 'string' },
                kind: { type: 'string' },
                metadata: {
                  type: 'object',
                  properties: { name: { type: 'string', maxLength: MAX_NAME_LENGTH, pattern: DNS1123_LABEL_PATTERN } },
                },
                spec: specOpenApiSchema(),
                status: STATUS_SCHEMA,
              },
            },
          },
        },
      ],
    },
  };
}
