import type Docker from 'dockerode';
import type { AddressLister, CustomerAddresses } from '../customer-addresses.js';
import type { Guard } from '../../resilience/guard.js';
import { labelFilter } from '../../domain/labels.js';
import { identityOf } from './identity.js';

/**
 * The model gateway's source check on Docker: every running customer container's addresses on
 * its networks, from one labelled list call (the list carries each container's network
 * settings, so no inspect per container).
 */
export function dockerContainerAddresses(docker: Docker, guard: Guard, extraLabels: Record<string, string> = {}): AddressLister {
  return async () => {
    const containers = await guard('listContainerAddresses', () =>
      docker.listContainers({ filters: { label: labelFilter(extraLabels), status: ['running'] } }),
    );
    const out: CustomerAddresses[] = [];
    for (const container of containers) {
      // A pool slot a customer claimed is that customer's (by name: its labels are the slot's).
      const { customer } = identityOf(container.Labels, container.Names?.[0] ?? '');
      if (!customer) continue;
      const networks = Object.values(container.NetworkSettings?.Networks ?? {});
      const addresses = networks.flatMap((n) => [n.IPAddress, n.GlobalIPv6Address].filter((a): a is string => Boolean(a)));
      out.push({ customer, addresses });
    }
    return out;
  };
}
