'use strict';
/**
 * Memory for both memory-backed benchmark file systems (bench/memfs.ts and
 * memfs_fuse_native.js): zeroed 1 MiB chunks carved from 64 MiB slabs and
 * reused after unlink or truncate.  One Buffer per chunk made V8 run a full
 * garbage collection every few dozen MiB written (external memory), which
 * then dominated both file systems' write speed.
 */
const CHUNK = 2 ** 20;
const SLAB = 64 * CHUNK;
const spare = [];
let slab;
let used = SLAB;

function takeChunk() {
  let chunk = spare.pop();
  if (!chunk) {
    if (used === SLAB) {
      slab = Buffer.allocUnsafeSlow(SLAB);
      used = 0;
    }
    chunk = slab.subarray(used, used + CHUNK);
    used += CHUNK;
  }
  return chunk.fill(0);
}

function giveChunks(chunks) {
  for (const chunk of chunks.values()) spare.push(chunk);
}

module.exports = { CHUNK, takeChunk, giveChunks };
