/**
 * How kube-apiserver decodes the time fields of the kinds the fake serves, so the fake refuses
 * what the real one refuses (HTTP 400: the body cannot be decoded, before any validation):
 *
 * - metav1.Time (metadata timestamps, condition times): Go's time.Parse with RFC3339. Fractional
 *   seconds of any length are accepted on input (Go parses them even when the layout has none).
 * - metav1.MicroTime (a Lease's acquireTime and renewTime, events.k8s.io eventTime): time.Parse
 *   with RFC3339Micro, "2006-01-02T15:04:05.000000Z07:00". Go's ".000000" layout element takes
 *   exactly six digits, so JavaScript's Date.toISOString() (three) is refused, and so is a time
 *   without a fraction. (apimachinery pkg/apis/meta/v1/micro_time.go)
 */

type Json = Record<string, unknown>;

const RFC3339 = /^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$/;
const RFC3339_MICRO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}(Z|[+-]\d{2}:\d{2})$/;

/** Paths (dot-separated, `[]` for every array item) of MicroTime fields, per plural. */
const MICRO_TIME_FIELDS: Record<string, string[]> = {
  leases: ['spec.acquireTime', 'spec.renewTime'],
};

/** Time fields every object has. */
const TIME_FIELDS = ['metadata.creationTimestamp', 'metadata.deletionTimestamp'];

const CONDITION_TIME_FIELDS: Record<string, string[]> = {
  deployments: ['status.conditions[].lastUpdateTime', 'status.conditions[].lastTransitionTime'],
  pods: ['status.conditions[].lastTransitionTime', 'status.startTime'],
};

/** The decoding error the real server would answer with (as a message), or undefined. */
export function decodeError(plural: string, kind: string, object: Json): string | undefined {
  const check = (path: string, pattern: RegExp, layout: string): string | undefined => {
    for (const value of valuesAt(object, path)) {
      if (value === null || value === undefined) continue;
      if (typeof value !== 'string' || !pattern.test(value) || Number.isNaN(Date.parse(value)))
        return `${kind} in version "v1" cannot be handled as a ${kind}: parsing time ${JSON.stringify(value)} as "${layout}": cannot parse (field ${path})`;
    }
    return undefined;
  };
  for (const path of MICRO_TIME_FIELDS[plural] ?? []) {
    const problem = check(path, RFC3339_MICRO, '2006-01-02T15:04:05.000000Z07:00');
    if (problem) return problem;
  }
  for (const path of [...TIME_FIELDS, ...(CONDITION_TIME_FIELDS[plural] ?? [])]) {
    const problem = check(path, RFC3339, '2006-01-02T15:04:05Z07:00');
    if (problem) return problem;
  }
  return undefined;
}

function valuesAt(object: unknown, path: string): unknown[] {
  let nodes: unknown[] = [object];
  for (const part of path.split('.')) {
    const many = part.endsWith('[]');
    const name = many ? part.slice(0, -2) : part;
    const next: unknown[] = [];
    for (const node of nodes) {
      if (node === null || typeof node !== 'object') continue;
      const value = (node as Json)[name];
      if (many) {
        if (Array.isArray(value)) next.push(...(value as unknown[]));
      } else if (value !== undefined) next.push(value);
    }
    nodes = next;
  }
  return nodes;
}
