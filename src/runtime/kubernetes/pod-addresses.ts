import { CoreV1Api, type KubeConfig } from '@kubernetes/client-node';
import { CUSTOMER_LABEL, MANAGED_BY_LABEL, MANAGED_BY_VALUE } from '../../domain/naming.js';
import type { AddressLister } from '../customer-addresses.js';
import type { Guard } from '../../resilience/guard.js';

/**
 * The model gateway's source check on Kubernetes: the pod IPs of every running customer pod in
 * the namespace, from one labelled list call. Traffic from a pod to the gateway's ClusterIP
 * Service keeps the pod IP as its source (kube-proxy rewrites the destination only), so this is
 * what the gateway sees as the peer address.
 */
export function podAddresses(
  kubeConfig: KubeConfig,
  namespace: string,
  guard: Guard,
  extraLabels: Record<string, string> = {},
): AddressLister {
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const labelSelector = Object.entries({ [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, ...extraLabels })
    .map(([k, v]) => `${k}=${v}`)
    .join(',');
  return async () => {
    const pods = await guard('listPodAddresses', () => core.listNamespacedPod({ namespace, labelSelector }));
    return pods.items
      .filter((pod) => pod.status?.phase === 'Running' && pod.metadata?.labels?.[CUSTOMER_LABEL])
      .map((pod) => ({
        customer: pod.metadata?.labels?.[CUSTOMER_LABEL] as string,
        addresses: [pod.status?.podIP, ...(pod.status?.podIPs ?? []).map((p) => p.ip)].filter((a): a is string => Boolean(a)),
      }));
  };
}
