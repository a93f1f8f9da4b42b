import { spawnSync } from 'node:child_process';
import type { FakeExecCall, FakeExecResult } from './fake-kube-api.js';

/**
 * The assistant container (or a restore pod of the same image) as pods/exec sees it, for the
 * fake API server's `execHandler`: runs `tar`, `node` (what backups run in the pod: the state
 * streamed out, SQLite's online backup API) and `sh` (a restore's scripts: `tar -x`, `mv`, `rm`)
 * on a folder standing in for the customer's claim, mounted at `mountPath`: an argument that
 * starts with `mountPath` is that folder. stdin, when the client sent one, is the command's.
 * Anything else is "not found", as in an image without it.
 */
export function claimPod(claim: string, mountPath = '/home/node/.openclaw'): (call: FakeExecCall) => FakeExecResult {
  return (call) => {
    const args = call.command.slice(1).map((a) => (a.startsWith(mountPath) ? claim + a.slice(mountPath.length) : a));
    const program = call.command[0] === 'node' ? process.execPath : call.command[0];
    if (program !== 'tar' && program !== 'sh' && program !== process.execPath)
      return { exitCode: 127, stderr: `sh: ${call.command[0]}: not found\n` };
    const run = spawnSync(program as string, args, {
      maxBuffer: 256 * 1024 * 1024,
      ...(call.stdin ? { input: call.stdin } : {}),
    });
    return { exitCode: run.status ?? 1, stdout: run.stdout, stderr: run.stderr.toString() };
  };
}
