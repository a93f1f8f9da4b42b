import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { ReplicaSet } from 'kubernetes-models/apps/v1/ReplicaSet';
import { Lease } from 'kubernetes-models/coordination.k8s.io/v1/Lease';
import { Ingress } from 'kubernetes-models/networking.k8s.io/v1/Ingress';
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { PersistentVolumeClaim } from 'kubernetes-models/v1/PersistentVolumeClaim';
import { Pod } from 'kubernetes-models/v1/Pod';
import { Secret } from 'kubernetes-models/v1/Secret';
import { Service } from 'kubernetes-models/v1/Service';

/**
 * Validation and defaulting of built-in kinds as kube-apiserver does them, for the fake API
 * server. Two layers, as in the real server:
 *
 * - the OpenAPI models (types, required fields, enums, formats such as quantities and int32),
 *   from the `kubernetes-models` package, which is generated from Kubernetes' own OpenAPI spec;
 * - the API server's field validation the OpenAPI spec cannot say (pkg/apis/core/validation and
 *   friends): object and container names, label syntax, ports in range, unique names, volume
 *   mounts naming a volume, a Deployment's selector matching its template, Secret keys.
 *
 * Either failing is a 422 Invalid with one cause per field, as the real server answers.
 * Defaulting (pkg/apis/*\/v1/defaults.go, plus the Service IP allocator) fills in what the
 * server fills in, so code comparing what it wrote with what it reads back meets those fields.
 */

type Json = Record<string, unknown>;
export interface FieldError {
  field: string;
  message: string;
}

interface Validatable {
  validate(): void;
}
const MODELS: Record<string, new (data: never) => Validatable> = {
  deployments: Deployment,
  replicasets: ReplicaSet,
  leases: Lease,
  ingresses: Ingress,
  networkpolicies: NetworkPolicy,
  configmaps: ConfigMap,
  persistentvolumeclaims: PersistentVolumeClaim,
  pods: Pod,
  secrets: Secret,
  services: Service,
};

export function isBuiltIn(plural: string): boolean {
  return plural in MODELS;
}

/** Every problem the real server would report for this object, or none. */
export function validateBuiltIn(plural: string, object: Json): FieldError[] {
  const Model = MODELS[plural];
  if (!Model) return [];
  const errors: FieldError[] = [];
  try {
    new Model(object as never).validate();
  } catch (error) {
    const causes = (error as { errors?: Array<{ instancePath?: string; message?: string; params?: Json }> }).errors;
    if (!Array.isArray(causes)) throw error;
    for (const cause of causes) {
      const missing = cause.params?.['missingProperty'];
      const path = `${cause.instancePath ?? ''}${typeof missing === 'string' ? `/${missing}` : ''}`;
      errors.push({
        field: fieldPath(path),
        message: typeof missing === 'string' ? 'Required value' : `Invalid value: ${cause.message ?? 'invalid'}`,
      });
    }
  }
  errors.push(...metadataErrors(plural, object));
  switch (plural) {
    case 'deployments':
    case 'replicasets': {
      const spec = asObject(object['spec']);
      const template = asObject(spec['template']);
      const selector = asObject(asObject(spec['selector'])['matchLabels']);
      const labels = asObject(asObject(template['metadata'])['labels']);
      if (Object.keys(selector).length === 0) errors.push({ field: 'spec.selector', message: 'Required value' });
      if (!Object.entries(selector).every(([k, v]) => labels[k] === v))
        errors.push({
          field: 'spec.template.metadata.labels',
          message: `Invalid value: ${JSON.stringify(labels)}: \`selector\` does not match template \`labels\``,
        });
      errors.push(...labelErrors('spec.template.metadata.labels', labels));
      errors.push(...podSpecErrors('spec.template.spec', asObject(template['spec'])));
      break;
    }
    case 'pods':
      errors.push(...podSpecErrors('spec', asObject(object['spec'])));
      break;
    case 'services':
      asArray(asObject(object['spec'])['ports']).forEach((port, i) => {
        errors.push(...portErrors(`spec.ports[${i}].port`, asObject(port)['port']));
      });
      break;
    case 'secrets':
    case 'configmaps': {
      let bytes = 0;
      for (const [k, v] of Object.entries(asObject(object['data']))) {
        if (!/^[-._a-zA-Z0-9]+$/.test(k) || k.length > 253)
          errors.push({
            field: `data[${k}]`,
            message: `Invalid value: "${k}": a valid config key must consist of alphanumeric characters, '-', '_' or '.'`,
          });
        bytes += typeof v === 'string' ? (plural === 'secrets' ? Buffer.from(v, 'base64').length : Buffer.byteLength(v)) : 0;
      }
      if (bytes > 1024 * 1024) errors.push({ field: 'data', message: 'Too long: must have at most 1048576 bytes' });
      break;
    }
  }
  return errors;
}

/** `/spec/template/spec/containers/0/name` as the server writes fields: `spec.template.spec.containers[0].name`. */
function fieldPath(pointer: string): string {
  return pointer
    .split('/')
    .filter(Boolean)
    .map((part) => part.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce((path, part) => (/^\d+$/.test(part) ? `${path}[${part}]` : path ? `${path}.${part}` : part), '');
}

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
const DNS1035_LABEL = /^[a-z]([-a-z0-9]*[a-z0-9])?$/;
const LABEL_VALUE = /^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$/;
const QUALIFIED_NAME = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;

function metadataErrors(plural: string, object: Json): FieldError[] {
  const metadata = asObject(object['metadata']);
  const errors: FieldError[] = [];
  const name = metadata['name'];
  if (typeof name === 'string') {
    // Services are DNS-1035 labels (their name is a DNS name in the cluster); most kinds DNS-1123 subdomains.
    const ok =
      plural === 'services' ? DNS1035_LABEL.test(name) && name.length <= 63 : DNS1123_SUBDOMAIN.test(name) && name.length <= 253;
    if (!ok)
      errors.push({
        field: 'metadata.name',
        message: `Invalid value: "${name}": ${plural === 'services' ? 'a DNS-1035 label' : 'a lowercase RFC 1123 subdomain'} must consist of lower case alphanumeric characters or '-'`,
      });
  }
  errors.push(...labelErrors('metadata.labels', asObject(metadata['labels'])));
  const annotations = asObject(metadata['annotations']);
  for (const key of Object.keys(annotations)) errors.push(...qualifiedNameErrors('metadata.annotations', key));
  const size = Object.entries(annotations).reduce((n, [k, v]) => n + k.length + String(v).length, 0);
  if (size > 256 * 1024) errors.push({ field: 'metadata.annotations', message: 'Too long: must have at most 262144 bytes' });
  return errors;
}

function labelErrors(field: string, labels: Json): FieldError[] {
  const errors: FieldError[] = [];
  for (const [key, value] of Object.entries(labels)) {
    errors.push(...qualifiedNameErrors(field, key));
    if (typeof value !== 'string' || value.length > 63 || !LABEL_VALUE.test(value))
      errors.push({
        field: `${field}`,
        message: `Invalid value: "${String(value)}": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (at most 63)`,
      });
  }
  return errors;
}

/** `prefix/name` keys of labels and annotations: a DNS subdomain prefix, a name of at most 63. */
function qualifiedNameErrors(field: string, key: string): FieldError[] {
  const slash = key.lastIndexOf('/');
  const prefix = slash >= 0 ? key.slice(0, slash) : undefined;
  const name = slash >= 0 ? key.slice(slash + 1) : key;
  const ok =
    name.length <= 63 &&
    QUALIFIED_NAME.test(name) &&
    (prefix === undefined || (prefix.length <= 253 && DNS1123_SUBDOMAIN.test(prefix)));
  return ok
    ? []
    : [{ field, message: `Invalid value: "${key}": name part must consist of alphanumeric characters, '-', '_' or '.'` }];
}

function portErrors(field: string, port: unknown): FieldError[] {
  return typeof port === 'number' && Number.isInteger(port) && port >= 1 && port <= 65535
    ? []
    : [{ field, message: `Invalid value: ${JSON.stringify(port)}: must be between 1 and 65535, inclusive` }];
}

function podSpecErrors(field: string, spec: Json): FieldError[] {
  const errors: FieldError[] = [];
  const volumes = asArray(spec['volumes']).map((v) => String(asObject(v)['name']));
  duplicates(volumes).forEach((name) => errors.push({ field: `${field}.volumes`, message: `Duplicate value: "${name}"` }));
  volumes.forEach((name, i) => {
    if (!DNS1123_LABEL.test(name) || name.length > 63)
      errors.push({ field: `${field}.volumes[${i}].name`, message: `Invalid value: "${name}": must be a DNS-1123 label` });
  });
  const containers = [
    ...asArray(spec['initContainers']).map((c, i) => ({ c: asObject(c), at: `${field}.initContainers[${i}]` })),
    ...asArray(spec['containers']).map((c, i) => ({ c: asObject(c), at: `${field}.containers[${i}]` })),
  ];
  if (asArray(spec['containers']).length === 0) errors.push({ field: `${field}.containers`, message: 'Required value' });
  duplicates(containers.map(({ c }) => String(c['name']))).forEach((name) =>
    errors.push({ field: `${field}.containers`, message: `Duplicate value: "${name}"` }),
  );
  for (const { c, at } of containers) {
    const name = String(c['name']);
    if (!DNS1123_LABEL.test(name) || name.length > 63)
      errors.push({ field: `${at}.name`, message: `Invalid value: "${name}": must be a DNS-1123 label` });
    asArray(c['ports']).forEach((p, i) =>
      errors.push(...portErrors(`${at}.ports[${i}].containerPort`, asObject(p)['containerPort'])),
    );
    asArray(c['volumeMounts']).forEach((m, i) => {
      const mount = asObject(m);
      if (!volumes.includes(String(mount['name'])))
        errors.push({ field: `${at}.volumeMounts[${i}].name`, message: `Not found: "${String(mount['name'])}"` });
    });
    duplicates(asArray(c['volumeMounts']).map((m) => String(asObject(m)['mountPath']))).forEach((path) =>
      errors.push({ field: `${at}.volumeMounts`, message: `Invalid value: "${path}": must be unique` }),
    );
    asArray(c['env']).forEach((e, i) => {
      if (!/^[-._a-zA-Z][-._a-zA-Z0-9]*$/.test(String(asObject(e)['name'])))
        errors.push({ field: `${at}.env[${i}].name`, message: 'Invalid value: a valid environment variable name' });
    });
    for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
      const p = asObject(c[probe]);
      if (c[probe] === undefined) continue;
      const handlers = ['exec', 'httpGet', 'tcpSocket', 'grpc'].filter((h) => p[h] !== undefined);
      if (handlers.length !== 1)
        errors.push({ field: `${at}.${probe}`, message: 'Invalid value: must specify exactly one handler type' });
      if (
        (probe === 'livenessProbe' || probe === 'startupProbe') &&
        p['successThreshold'] !== undefined &&
        p['successThreshold'] !== 1
      )
        errors.push({ field: `${at}.${probe}.successThreshold`, message: 'Invalid value: must be 1' });
    }
  }
  return errors;
}

function duplicates(values: string[]): string[] {
  return [...new Set(values.filter((v, i) => values.indexOf(v) !== i))];
}

// ---- defaulting ----

export interface DefaultingContext {
  /** The object as stored before this write (undefined on create). */
  previous: Json | undefined;
  /** The next free cluster IP of the Service CIDR. */
  allocateClusterIP: () => string;
  /** The cluster's default StorageClass (the DefaultStorageClass admission plugin), if any. */
  defaultStorageClass: string | undefined;
}

/** Fills in what kube-apiserver fills in on every write of the kind (and allocates a Service's IP on create). */
export function defaultBuiltIn(plural: string, object: Json, context: DefaultingContext): Json {
  const out = structuredClone(object);
  switch (plural) {
    case 'deployments':
    case 'replicasets': {
      const spec = objectAt(out, 'spec');
      spec['replicas'] ??= 1;
      if (plural === 'deployments') {
        spec['revisionHistoryLimit'] ??= 10;
        spec['progressDeadlineSeconds'] ??= 600;
        const strategy = objectAt(spec, 'strategy');
        strategy['type'] ??= 'RollingUpdate';
        if (strategy['type'] === 'RollingUpdate') {
          const rolling = objectAt(strategy, 'rollingUpdate');
          rolling['maxUnavailable'] ??= '25%';
          rolling['maxSurge'] ??= '25%';
        }
      }
      defaultPodSpec(objectAt(objectAt(spec, 'template'), 'spec'));
      break;
    }
    case 'pods':
      defaultPodSpec(objectAt(out, 'spec'));
      break;
    case 'services': {
      const spec = objectAt(out, 'spec');
      spec['type'] ??= 'ClusterIP';
      spec['sessionAffinity'] ??= 'None';
      spec['internalTrafficPolicy'] ??= 'Cluster';
      for (const port of asArray(spec['ports']).map(asObject)) {
        port['protocol'] ??= 'TCP';
        port['targetPort'] ??= port['port'];
      }
      if (spec['type'] !== 'ExternalName') {
        // Allocated once (the allocator); an update that leaves it out keeps it, as the registry does.
        const previous = asObject(asObject(context.previous)['spec']);
        if (spec['clusterIP'] === undefined || spec['clusterIP'] === '')
          spec['clusterIP'] = (previous['clusterIP'] as string | undefined) ?? context.allocateClusterIP();
        spec['clusterIPs'] ??= [spec['clusterIP']];
        spec['ipFamilies'] ??= ['IPv4'];
        spec['ipFamilyPolicy'] ??= 'SingleStack';
      }
      break;
    }
    case 'persistentvolumeclaims': {
      const spec = objectAt(out, 'spec');
      spec['volumeMode'] ??= 'Filesystem';
      if (context.previous === undefined && spec['storageClassName'] === undefined && context.defaultStorageClass)
        spec['storageClassName'] = context.defaultStorageClass;
      break;
    }
    case 'networkpolicies': {
      const spec = objectAt(out, 'spec');
      for (const rule of [...asArray(spec['ingress']), ...asArray(spec['egress'])].map(asObject))
        for (const port of asArray(rule['ports']).map(asObject)) port['protocol'] ??= 'TCP';
      if (spec['policyTypes'] === undefined)
        spec['policyTypes'] = ['Ingress', ...(spec['egress'] !== undefined ? ['Egress'] : [])];
      break;
    }
    case 'secrets':
      out['type'] ??= 'Opaque';
      break;
  }
  return out;
}

function defaultPodSpec(spec: Json): void {
  spec['restartPolicy'] ??= 'Always';
  spec['dnsPolicy'] ??= 'ClusterFirst';
  spec['terminationGracePeriodSeconds'] ??= 30;
  spec['schedulerName'] ??= 'default-scheduler';
  spec['securityContext'] ??= {};
  for (const volume of asArray(spec['volumes']).map(asObject)) {
    if (volume['secret'] !== undefined) asObject(volume['secret'])['defaultMode'] ??= 0o644;
    if (volume['configMap'] !== undefined) asObject(volume['configMap'])['defaultMode'] ??= 0o644;
  }
  for (const container of [...asArray(spec['initContainers']), ...asArray(spec['containers'])].map(asObject)) {
    container['terminationMessagePath'] ??= '/dev/termination-log';
    container['terminationMessagePolicy'] ??= 'File';
    const image = String(container['image'] ?? '');
    const tag = /:([^/:@]+)$/.exec(image.split('@')[0] ?? '')?.[1];
    container['imagePullPolicy'] ??= image.includes('@') || (tag !== undefined && tag !== 'latest') ? 'IfNotPresent' : 'Always';
    for (const port of asArray(container['ports']).map(asObject)) port['protocol'] ??= 'TCP';
    for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
      if (container[probe] === undefined) continue;
      const p = asObject(container[probe]);
      p['timeoutSeconds'] ??= 1;
      p['periodSeconds'] ??= 10;
      p['successThreshold'] ??= 1;
      p['failureThreshold'] ??= 3;
      if (p['httpGet'] !== undefined) asObject(p['httpGet'])['scheme'] ??= 'HTTP';
    }
  }
}

function asObject(value: unknown): Json {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Json) : {};
}

function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

/** The object at `key`, created when absent, so defaults can be written into it. */
function objectAt(parent: Json, key: string): Json {
  if (parent[key] === null || typeof parent[key] !== 'object' || Array.isArray(parent[key])) parent[key] = {};
  return parent[key] as Json;
}
