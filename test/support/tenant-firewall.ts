import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

/**
 * The tenant firewall (deploy/host/blytz-tenants.nft, loaded by scripts/services.sh) drops what a
 * customer container sends to this host, except to the TCP ports in the set
 * `customer_host_tcp_ports`: what an operator adds for the model gateway. A test serving
 * customers from the host (the model gateway, a stand-in for Telegram) opens its ports the same
 * way, and closes them again; returns the closer.
 */
const run = promisify(execFile);
const SET = ['inet', 'blytz_tenants', 'customer_host_tcp_ports'];

export async function openHostPortsToCustomers(ports: number[]): Promise<() => Promise<void>> {
  const elements = `{ ${ports.join(', ')} }`;
  await run('nft', ['add', 'element', ...SET, elements]);
  return async () => {
    await run('nft', ['delete', 'element', ...SET, elements]).catch(() => {});
  };
}
