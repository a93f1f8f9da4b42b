import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buffer } from 'node:stream/consumers';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3ArchiveStorage, isTransientS3 } from '../../src/backup/s3-storage.js';
import { ArchiveNotFoundError } from '../../src/backup/storage.js';
import { CircuitOpenError, DependencyError } from '../../src/resilience/guard.js';
import { Policies } from '../../src/resilience/policies.js';
import { createBucket, S3_CREDENTIALS, S3_ENDPOINT, startPrivateS3, type PrivateS3 } from '../support/s3.js';
import { waitFor } from '../support/wait-for.js';

/**
 * The S3 archive store against a real S3-protocol server (s3rver, started by
 * `scripts/services.sh s3`), through the real AWS SDK: multipart uploads, reads, deletes, and a
 * store that goes down and comes back behind the `backup` breaker.
 */

let work: string;
beforeAll(() => {
  work = mkdtempSync(join(tmpdir(), 'blytz-s3-test-'));
});
afterAll(() => rmSync(work, { recursive: true, force: true }));

function storage(bucket: string, endpoint = S3_ENDPOINT, policies = new Policies()) {
  return new S3ArchiveStorage({
    bucket,
    prefix: 'archives/v1',
    region: 'us-east-1',
    endpoint,
    credentials: S3_CREDENTIALS,
    guard: policies.guard('backup'),
  });
}

describe('S3 archive storage', () => {
  it('stores a large archive in parts, reads it back byte for byte, deletes it', async () => {
    const store = storage(await createBucket());
    await store.ping();
    const data = randomBytes(40 * 1024 * 1024 + 123); // three 16 MiB parts
    const file = join(work, 'big.archive');
    writeFileSync(file, data);
    await store.put('alice/1.tar.zst.blytz', file, data.length);
    const back = await buffer(await store.get('alice/1.tar.zst.blytz'));
    expect(createHash('sha256').update(back).digest('hex')).toBe(createHash('sha256').update(data).digest('hex'));
    await store.delete('alice/1.tar.zst.blytz');
    await expect(store.get('alice/1.tar.zst.blytz')).rejects.toBeInstanceOf(ArchiveNotFoundError);
    await store.delete('alice/1.tar.zst.blytz'); // missing: not an error
    store.destroy();
  });

  it('refuses keys it did not make, and answers for a missing bucket without counting it as down', async () => {
    const store = storage('no-such-bucket-here');
    await expect(store.get('../etc/passwd')).rejects.toThrow(/invalid backup archive key/);
    const error = await store.ping().catch((e: unknown) => e);
    expect(isTransientS3(error)).toBe(false);
    store.destroy();
  });

  describe('a store that is down', () => {
    let s3: PrivateS3;
    beforeAll(async () => {
      s3 = await startPrivateS3();
    });
    afterAll(async () => {
      await s3?.stop();
    });

    it('fails with the dependency named, opens the breaker, and works again once the store is back', async () => {
      const bucket = await createBucket(s3.endpoint);
      const policies = new Policies({
        overrides: {
          backup: {
            retries: 1,
            minDelayMs: 10,
            maxDelayMs: 20,
            failureThreshold: 2,
            halfOpenAfterMs: 300,
            isTransient: isTransientS3,
          },
        },
      });
      const store = storage(bucket, s3.endpoint, policies);
      const file = join(work, 'small.archive');
      writeFileSync(file, randomBytes(1000));
      await store.put('bob/1.tar.zst.blytz', file, 1000);

      await s3.kill();
      for (let i = 0; i < 2; i++) {
        const error = await store.put('bob/2.tar.zst.blytz', file, 1000).catch((e: unknown) => e);
        expect(error).toBeInstanceOf(DependencyError);
        expect((error as DependencyError).dependency).toBe('backup');
      }
      expect(policies.states()['backup']).toBe('open');
      await expect(store.put('bob/2.tar.zst.blytz', file, 1000)).rejects.toBeInstanceOf(CircuitOpenError);
      expect(policies.states()['docker']).toBe('closed'); // nothing else stops

      await s3.start();
      await waitFor(async () => {
        try {
          await store.put('bob/2.tar.zst.blytz', file, 1000);
          return true;
        } catch {
          return false;
        }
      }, 20_000);
      expect(policies.states()['backup']).toBe('closed');
      expect((await buffer(await store.get('bob/1.tar.zst.blytz'))).length).toBe(1000);
      store.destroy();
    });
  });
});
