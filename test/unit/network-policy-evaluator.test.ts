import { describe, expect, it } from 'vitest';
import { connectionAllowed, namespaceLabels, selects, type ClusterNetwork } from '../support/fake-kube/network-policy.js';

/**
 * The tests' NetworkPolicy evaluator (test/support/fake-kube/network-policy.ts) against the
 * semantics of networking.k8s.io/v1, case by case: the per-customer policy is only tested as
 * behaviour if this decides as a CNI enforcing the API would.
 */
const pod = (
  namespace: string,
  labels: Record<string, string>,
  ip: string,
  ports: Array<{ name: string; containerPort: number }> = [],
) => ({
  metadata: { namespace, name: `${Object.values(labels).join('-')}-pod`, labels },
  spec: { containers: [{ name: 'main', ports }] },
  status: { podIP: ip },
});
const web = pod('app', { app: 'web' }, '10.244.0.2', [{ name: 'http', containerPort: 8080 }]);
const client = pod('app', { app: 'client' }, '10.244.0.3');
const stranger = pod('other', { app: 'client' }, '10.244.1.3');
const policy = (namespace: string, spec: Record<string, unknown>) => ({ metadata: { namespace, name: 'p' }, spec });
const cluster = (...policies: Array<Record<string, unknown>>): ClusterNetwork => ({
  namespaces: namespaceLabels(['app', 'other'], { other: { team: 'b' } }),
  policies,
});

describe('NetworkPolicy evaluator', () => {
  it('no policy selects a pod: open both ways', () => {
    expect(connectionAllowed(cluster(), { pod: client }, { pod: web }, 8080)).toBe(true);
    expect(connectionAllowed(cluster(), { pod: web }, { ip: '1.1.1.1' }, 443)).toBe(true);
  });

  it('a policy selecting a pod closes its directions but for its rules; rules of several policies add up', () => {
    const denyAll = policy('app', { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Ingress', 'Egress'] });
    expect(connectionAllowed(cluster(denyAll), { pod: client }, { pod: web }, 8080)).toBe(false);
    expect(connectionAllowed(cluster(denyAll), { pod: web }, { ip: '1.1.1.1' }, 443)).toBe(false);
    // Only Ingress: egress stays open.
    const ingressOnly = policy('app', { podSelector: { matchLabels: { app: 'web' } }, policyTypes: ['Ingress'] });
    expect(connectionAllowed(cluster(ingressOnly), { pod: web }, { ip: '1.1.1.1' }, 443)).toBe(true);
    const allowClient = policy('app', {
      podSelector: { matchLabels: { app: 'web' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }], ports: [{ port: 'http' }] }],
    });
    expect(connectionAllowed(cluster(denyAll, allowClient), { pod: client }, { pod: web }, 8080)).toBe(true);
    expect(connectionAllowed(cluster(denyAll, allowClient), { pod: client }, { pod: web }, 9090)).toBe(false);
  });

  it('both ends must agree: the sender may send and the receiver receive', () => {
    const clientEgressClosed = policy('app', { podSelector: { matchLabels: { app: 'client' } }, policyTypes: ['Egress'] });
    expect(connectionAllowed(cluster(clientEgressClosed), { pod: client }, { pod: web }, 8080)).toBe(false);
  });

  it('peers: a podSelector alone is the policy namespace only; with a namespaceSelector, both must match; ipBlock by address, except excepted', () => {
    const sameNamespace = policy('app', {
      podSelector: { matchLabels: { app: 'web' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { app: 'client' } } }] }],
    });
    expect(connectionAllowed(cluster(sameNamespace), { pod: stranger }, { pod: web }, 8080)).toBe(false);
    const teamB = policy('app', {
      podSelector: { matchLabels: { app: 'web' } },
      ingress: [
        { from: [{ namespaceSelector: { matchLabels: { team: 'b' } }, podSelector: { matchLabels: { app: 'client' } } }] },
      ],
    });
    expect(connectionAllowed(cluster(teamB), { pod: stranger }, { pod: web }, 8080)).toBe(true);
    expect(connectionAllowed(cluster(teamB), { pod: client }, { pod: web }, 8080)).toBe(false);
    const internet = policy('app', {
      podSelector: { matchLabels: { app: 'web' } },
      policyTypes: ['Egress'],
      egress: [
        {
          to: [
            { ipBlock: { cidr: '0.0.0.0/0', except: ['10.0.0.0/8', '169.254.0.0/16'] } },
            { ipBlock: { cidr: '::/0', except: ['fc00::/7'] } },
          ],
        },
      ],
    });
    expect(connectionAllowed(cluster(internet), { pod: web }, { ip: '1.1.1.1' }, 443)).toBe(true);
    expect(connectionAllowed(cluster(internet), { pod: web }, { ip: '169.254.169.254' }, 80)).toBe(false);
    expect(connectionAllowed(cluster(internet), { pod: web }, { pod: client }, 80)).toBe(false); // 10.244.0.3
    expect(connectionAllowed(cluster(internet), { pod: web }, { ip: '2606:4700::1111' }, 443)).toBe(true);
    expect(connectionAllowed(cluster(internet), { pod: web }, { ip: 'fd00:ec2::254' }, 80)).toBe(false);
  });

  it("ports: by number with endPort ranges, by the destination pod's port name, by protocol (TCP unless said)", () => {
    const ranged = policy('app', {
      podSelector: { matchLabels: { app: 'client' } },
      policyTypes: ['Egress'],
      egress: [
        {
          ports: [
            { port: 8000, endPort: 8100 },
            { port: 53, protocol: 'UDP' },
          ],
        },
      ],
    });
    expect(connectionAllowed(cluster(ranged), { pod: client }, { pod: web }, 8080)).toBe(true);
    expect(connectionAllowed(cluster(ranged), { pod: client }, { pod: web }, 8101)).toBe(false);
    expect(connectionAllowed(cluster(ranged), { pod: client }, { ip: '10.96.0.10' }, 53, 'UDP')).toBe(true);
    expect(connectionAllowed(cluster(ranged), { pod: client }, { ip: '10.96.0.10' }, 53, 'TCP')).toBe(false);
  });

  it('label selectors: matchLabels and every matchExpressions operator; {} selects everything', () => {
    expect(selects({}, {})).toBe(true);
    const labels = { app: 'web', tier: 'front' };
    expect(selects({ matchExpressions: [{ key: 'app', operator: 'In', values: ['web', 'api'] }] }, labels)).toBe(true);
    expect(selects({ matchExpressions: [{ key: 'app', operator: 'NotIn', values: ['web'] }] }, labels)).toBe(false);
    expect(selects({ matchExpressions: [{ key: 'tier', operator: 'Exists' }] }, labels)).toBe(true);
    expect(selects({ matchExpressions: [{ key: 'tier', operator: 'DoesNotExist' }] }, labels)).toBe(false);
    expect(selects({ matchLabels: { app: 'web' }, matchExpressions: [{ key: 'x', operator: 'DoesNotExist' }] }, labels)).toBe(
      true,
    );
  });
});
