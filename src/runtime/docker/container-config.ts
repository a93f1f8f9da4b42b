import type { ContainerCreateOptions } from 'dockerode';
import {
  containerName,
  nextContainerName,
  CUSTOMER_LABEL,
  isDns1123Label,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  SPEC_HASH_LABEL,
} from '../../domain/naming.js';
import { TMPFS_MIB, type ContainerSpec } from '../runtime.js';
import {
  CONTAINER_PORT_LABEL,
  GENERATION_LABEL,
  HOST_PORT_LABEL,
  OWN_HASH_LABEL,
  POOL_SLOT_LABEL,
  PROBES_LABEL,
  START_TIMEOUT_LABEL,
} from '../../domain/labels.js';
import { poolContainerName } from '../../domain/pool.js';

export interface LogRotation {
  maxSize: string;
  maxFile: number;
}

export const DEFAULT_LOG_ROTATION: LogRotation = { maxSize: '10m', maxFile: 3 };

const TMPFS_SIZE = `${TMPFS_MIB}m`;

function uidOf(user: string): string {
  return user.split(':')[0] as string;
}
function gidOf(user: string): string {
  return user.split(':')[1] ?? uidOf(user);
}

/** `uid:gid` with a non-zero uid: a customer's process never runs as root. */
const NON_ROOT_USER = /^[1-9]\d*(:\d+)?$/;

/**
 * The engine's create request for a customer container: hardened by default (no capabilities,
 * no privilege gain, memory/CPU/pids caps, rotated logs), reachable only through Caddy (the
 * port is published on 127.0.0.1) and on a network of its own customer (networks.ts). Pure, so
 * it can be checked without an engine.
 */
export function containerConfig(
  spec: ContainerSpec,
  extraLabels: Record<string, string>,
  logs: LogRotation = DEFAULT_LOG_ROTATION,
  /** The customer's own network (networks.ts); absent: Docker's default bridge, shared by all. */
  network?: string,
): ContainerCreateOptions {
  const pooled = spec.poolSlot !== undefined;
  if (pooled && (!Number.isSafeInteger(spec.poolSlot) || (spec.poolSlot as number) < 1))
    throw new Error(`pool slot ${String(spec.poolSlot)} is not a positive integer`);
  if (!pooled && !isDns1123Label(spec.customer))
    throw new Error(`customer name ${JSON.stringify(spec.customer)} is not a DNS-1123 label`);
  if (!NON_ROOT_USER.test(spec.user))
    throw new Error(`container user ${JSON.stringify(spec.user)} must be a numeric non-root uid[:gid]`);
  for (const probe of [spec.probes.startup, spec.probes.liveness, spec.probes.readiness]) {
    if (probe && !probe.path.startsWith('/')) throw new Error(`probe path ${JSON.stringify(probe.path)} must start with /`);
  }
  for (const path of spec.tmpfs) {
    if (!path.startsWith('/') || path.includes(',') || path.includes(':'))
      throw new Error(`tmpfs path ${JSON.stringify(path)} must be an absolute path without , or :`);
  }
  for (const port of [spec.hostPort, spec.containerPort]) {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`port ${port} is not a valid TCP port`);
  }
  const portKey = `${spec.containerPort}/tcp`;
  return {
    name: pooled
      ? poolContainerName(spec.poolSlot as number, extraLabels['cloud.blytz.instance'])
      : spec.slot === 'next'
        ? nextContainerName(spec.customer)
        : containerName(spec.customer),
    Image: spec.image,
    User: spec.user,
    // spec.env holds plain settings only; secrets reach the container as mounted 0600 files.
    Env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
    Labels: {
      ...extraLabels,
      [MANAGED_BY_LABEL]: MANAGED_BY_VALUE,
      // A pool slot belongs to no customer yet: its own label instead (a claim binds it by name).
      ...(pooled ? { [POOL_SLOT_LABEL]: String(spec.poolSlot) } : { [CUSTOMER_LABEL]: spec.customer }),
      [SPEC_HASH_LABEL]: spec.specHash,
      [HOST_PORT_LABEL]: String(spec.hostPort),
      [CONTAINER_PORT_LABEL]: String(spec.containerPort),
      [PROBES_LABEL]: JSON.stringify(spec.probes),
      [START_TIMEOUT_LABEL]: String(spec.startTimeoutSeconds),
      ...(spec.ownHash === undefined ? {} : { [OWN_HASH_LABEL]: spec.ownHash }),
      ...(spec.generation === undefined ? {} : { [GENERATION_LABEL]: String(spec.generation) }),
    },
    ExposedPorts: { [portKey]: {} },
    HostConfig: {
      // Typed bind mounts, not `host:ctr` strings: a missing source folder is an error instead
      // of a root-owned empty folder silently created by the engine.
      Mounts: spec.mounts.map((m) => ({
        Type: 'bind' as const,
        Source: m.hostPath,
        Target: m.containerPath,
        ReadOnly: m.readOnly,
      })),
      PortBindings: { [portKey]: [{ HostIp: '127.0.0.1', HostPort: String(spec.hostPort) }] },
      ...(network === undefined ? {} : { NetworkMode: network }),
      Memory: spec.resources.memoryBytes,
      MemorySwap: spec.resources.memoryBytes, // no swap on top of the memory cap
      NanoCpus: spec.resources.nanoCpus,
      PidsLimit: spec.resources.pidsLimit,
      // The image cannot be changed by what runs in it: the assistant writes only its state
      // folder (the mount) and the tmpfs folders the template names (emptied on restart).
      ReadonlyRootfs: true,
      Tmpfs: Object.fromEntries(spec.tmpfs.map((path) => [path, `rw,nosuid,nodev,size=${TMPFS_SIZE},uid=${uidOf(spec.user)},gid=${gidOf(spec.user)},mode=0700`])),
      SecurityOpt: ['no-new-privileges:true'],
      CapDrop: ['ALL'],
      RestartPolicy: { Name: 'unless-stopped', MaximumRetryCount: 0 },
      // A tiny init as PID 1 forwards SIGTERM (a server as PID 1 gets no default handler, so
      // `stop` would always wait out the grace period) and reaps the assistant's child processes.
      Init: true,
      LogConfig: { Type: 'json-file', Config: { 'max-size': logs.maxSize, 'max-file': String(logs.maxFile) } },
    },
  };
}
