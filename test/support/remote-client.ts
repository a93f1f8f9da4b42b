import { networkInterfaces } from 'node:os';

/**
 * An address of this host that is neither loopback nor a Docker bridge: a client Caddy forwards
 * from it is a real remote client to the gateway, as a customer's browser is. (OpenClaw refuses
 * a proxied request whose client is loopback: it cannot tell who that is.)
 */
export function remoteClientAddress(): string {
  for (const [name, addresses] of Object.entries(networkInterfaces())) {
    if (name === 'lo' || name.startsWith('docker') || name.startsWith('br-') || name.startsWith('veth')) continue;
    const v4 = addresses?.find((a) => a.family === 'IPv4' && !a.internal);
    if (v4) return v4.address;
  }
  throw new Error('this host has no non-loopback IPv4 address to act as a remote client from');
}
