import { BlockList, isIPv6 } from 'node:net';

/**
 * Whether a connection is allowed under the NetworkPolicies present, decided as the
 * networking.k8s.io/v1 API specifies it (and Calico or Cilium enforce it), so the per-customer
 * policy and the kit's policies can be tested as behaviour ("customer A cannot reach customer
 * B"), not by their shape. Pure: it reads the objects it is given.
 *
 * - A connection from A to B is allowed when A may send it (egress) and B may receive it
 *   (ingress). Traffic a node or the world sends has no egress side; traffic to an address
 *   outside the cluster has no ingress side.
 * - A pod selected by no policy of its namespace for a direction is open in that direction; a pod
 *   selected by one or more is closed but for what some rule of one of them allows (rules add up,
 *   none subtracts).
 * - A rule allows a peer and port when some `from`/`to` entry matches the peer (none: every peer)
 *   and some port entry matches (none: every port). Entries: `podSelector` alone (pods of the
 *   policy's own namespace), `namespaceSelector` alone (every pod of the namespaces it selects),
 *   both (the pods it selects in those namespaces), `ipBlock` (addresses in its CIDR but not in
 *   an `except`, matched on the address, a pod's included, as Calico and Cilium do). Ports by
 *   number or by a name the destination pod's containers declare, with `endPort` ranges;
 *   protocol TCP unless given.
 * - Label selectors: matchLabels and matchExpressions (In, NotIn, Exists, DoesNotExist); an
 *   empty selector selects everything.
 *
 * Not modelled: policies of other kinds (Cilium's, Calico's own CRDs, AdminNetworkPolicy),
 * Service address translation (connect to a pod's address and container port, where the policy
 * applies), hostNetwork pods, and what each CNI does with node-to-pod traffic.
 */

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Json = Record<string, any>;

export interface ClusterNetwork {
  /** Every namespace's labels (each has `kubernetes.io/metadata.name` as on any cluster since 1.21). */
  namespaces: Record<string, Record<string, string>>;
  policies: Json[];
}

/** One end of a connection: a pod (as the API server stores it, its address in status.podIP) or a bare address. */
export type Endpoint = { pod: Json } | { ip: string };

export function namespaceLabels(
  names: string[],
  extra: Record<string, Record<string, string>> = {},
): ClusterNetwork['namespaces'] {
  return Object.fromEntries(names.map((name) => [name, { 'kubernetes.io/metadata.name': name, ...(extra[name] ?? {}) }]));
}

export function connectionAllowed(
  cluster: ClusterNetwork,
  from: Endpoint,
  to: Endpoint,
  port: number,
  protocol: 'TCP' | 'UDP' | 'SCTP' = 'TCP',
): boolean {
  const egressOk = !('pod' in from) || directionAllows(cluster, from.pod, 'Egress', to, to, port, protocol);
  const ingressOk = !('pod' in to) || directionAllows(cluster, to.pod, 'Ingress', from, to, port, protocol);
  return egressOk && ingressOk;
}

function directionAllows(
  cluster: ClusterNetwork,
  pod: Json,
  direction: 'Ingress' | 'Egress',
  peer: Endpoint,
  destination: Endpoint,
  port: number,
  protocol: string,
): boolean {
  const namespace = String(pod['metadata']?.['namespace']);
  const applying = cluster.policies.filter(
    (policy) =>
      policy['metadata']?.['namespace'] === namespace &&
      policyTypes(policy).includes(direction) &&
      selects(policy['spec']?.['podSelector'] ?? {}, labelsOf(pod)),
  );
  if (applying.length === 0) return true;
  const rulesKey = direction === 'Ingress' ? 'ingress' : 'egress';
  const peersKey = direction === 'Ingress' ? 'from' : 'to';
  return applying.some((policy) =>
    ((policy['spec']?.[rulesKey] as Json[] | undefined) ?? []).some((rule) => {
      const peers = rule[peersKey] as Json[] | undefined;
      const peerOk =
        peers === undefined || peers.length === 0 || peers.some((entry) => peerMatches(cluster, policy, entry, peer));
      const ports = rule['ports'] as Json[] | undefined;
      const portOk =
        ports === undefined || ports.length === 0 || ports.some((entry) => portMatches(entry, destination, port, protocol));
      return peerOk && portOk;
    }),
  );
}

function policyTypes(policy: Json): string[] {
  const types = policy['spec']?.['policyTypes'] as string[] | undefined;
  if (types && types.length > 0) return types;
  return ['Ingress', ...(policy['spec']?.['egress'] !== undefined ? ['Egress'] : [])];
}

function peerMatches(cluster: ClusterNetwork, policy: Json, entry: Json, peer: Endpoint): boolean {
  if (entry['ipBlock']) {
    const ip = 'pod' in peer ? (peer.pod['status']?.['podIP'] as string | undefined) : peer.ip;
    return ip !== undefined && inBlock(ip, entry['ipBlock']);
  }
  if (!('pod' in peer)) return false; // selectors select pods only
  const podNamespace = String(peer.pod['metadata']?.['namespace']);
  const namespaceOk =
    entry['namespaceSelector'] !== undefined
      ? selects(entry['namespaceSelector'], cluster.namespaces[podNamespace] ?? {})
      : podNamespace === policy['metadata']?.['namespace'];
  const podOk = entry['podSelector'] === undefined || selects(entry['podSelector'], labelsOf(peer.pod));
  return namespaceOk && podOk;
}

function portMatches(entry: Json, destination: Endpoint, port: number, protocol: string): boolean {
  if ((entry['protocol'] ?? 'TCP') !== protocol) return false;
  const wanted = entry['port'];
  if (wanted === undefined) return true;
  if (typeof wanted === 'number') {
    const end = typeof entry['endPort'] === 'number' ? entry['endPort'] : wanted;
    return port >= wanted && port <= end;
  }
  // A named port: what the destination pod's containers call it.
  if (!('pod' in destination)) return false;
  const containers = (destination.pod['spec']?.['containers'] as Json[] | undefined) ?? [];
  return containers.some((c) =>
    ((c['ports'] as Json[] | undefined) ?? []).some(
      (p) => p['name'] === wanted && p['containerPort'] === port && (p['protocol'] ?? 'TCP') === protocol,
    ),
  );
}

function inBlock(ip: string, block: Json): boolean {
  const family = isIPv6(ip) ? 'ipv6' : 'ipv4';
  const contains = (cidr: string) => {
    const [address = '', bits = ''] = cidr.split('/');
    if (isIPv6(address) !== (family === 'ipv6')) return false;
    const list = new BlockList();
    list.addSubnet(address, Number(bits), family);
    return list.check(ip, family);
  };
  return contains(String(block['cidr'])) && !((block['except'] as string[] | undefined) ?? []).some(contains);
}

function labelsOf(object: Json): Record<string, string> {
  return (object['metadata']?.['labels'] as Record<string, string> | undefined) ?? {};
}

/** A metav1.LabelSelector against labels; `{}` selects everything. */
export function selects(selector: Json, labels: Record<string, string>): boolean {
  const matchLabels = (selector['matchLabels'] as Record<string, string> | undefined) ?? {};
  if (!Object.entries(matchLabels).every(([k, v]) => labels[k] === v)) return false;
  return ((selector['matchExpressions'] as Json[] | undefined) ?? []).every((e) => {
    const value = labels[String(e['key'])];
    const values = (e['values'] as string[] | undefined) ?? [];
    switch (e['operator']) {
      case 'In':
        return value !== undefined && values.includes(value);
      case 'NotIn':
        return value === undefined || !values.includes(value);
      case 'Exists':
        return value !== undefined;
      case 'DoesNotExist':
        return value === undefined;
      default:
        throw new Error(`unknown label selector operator ${String(e['operator'])}`);
    }
  });
}
