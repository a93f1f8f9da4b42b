import type { Writable } from 'node:stream';

/** Stream types in the engine's frame header (0 would be stdin, never sent back). */
const STDOUT = 1;
const STDERR = 2;
const HEADER_BYTES = 8;

/**
 * Splits the engine's multiplexed output of an exec without a TTY into stdout and stderr: frames
 * of an 8-byte header (stream type, three zero bytes, payload length as a big-endian uint32) and
 * the payload. Returns what to call with each chunk read from the exec's stream.
 *
 * Our own rather than docker-modem's `demuxStream`: that one recurses twice per frame within one
 * read and copies what is left each time, so a command in a customer's container writing
 * thousands of one-byte frames overflows the stack inside the socket's 'data' handler (a throw
 * that ends blytz serve) and costs time quadratic in the frames. This one loops, keeps at most one
 * header's bytes between reads, and passes a payload on in the pieces it arrives in, so a header
 * that claims 4 GiB holds nothing in memory (the writers cap what they keep).
 */
export function execDemuxer(stdout: Writable, stderr: Writable): (chunk: Buffer) => void {
  let header = Buffer.alloc(0);
  /** Payload bytes of the current frame not seen yet, and where they go (undefined: dropped). */
  let remaining = 0;
  let target: Writable | undefined;
  return (chunk) => {
    let at = 0;
    while (at < chunk.length) {
      if (remaining > 0) {
        const end = Math.min(chunk.length, at + remaining);
        target?.write(chunk.subarray(at, end));
        remaining -= end - at;
        at = end;
        continue;
      }
      const need = HEADER_BYTES - header.length;
      const part = chunk.subarray(at, at + need);
      header = Buffer.concat([header, part]); // a copy: at most 8 bytes kept between reads
      at += part.length;
      if (header.length < HEADER_BYTES) break;
      const type = header[0];
      remaining = header.readUInt32BE(4);
      target = type === STDOUT ? stdout : type === STDERR ? stderr : undefined;
      header = Buffer.alloc(0);
    }
  };
}
