#!/usr/bin/env node
'use strict';
/*
 * Run by `npm ci` (package.json "install"): fixes fuse-native 2.2.6's utimens
 * and rebuilds it from source.  Its C glue passes atime in the mtime slot, so
 * no file's mtime could ever be set (cp -p, tar, rsync, make), and it turns
 * UTIME_OMIT / UTIME_NOW into bogus millisecond values, and without
 * flag_utime_omit_ok libfuse drops a change of only one time (touch -a,
 * touch -m).  The fix sends mtime in its own slot, the two special values as
 * sentinels that src/fuse/fuse.ts decodes, and sets flag_utime_omit_ok.
 *
 * Its JavaScript glue never checks the caller's buffer size in getxattr and
 * listxattr: a value larger than the buffer (Python asks with 128 bytes
 * first) answered EIO instead of ERANGE.  The fix answers ERANGE, so the
 * caller asks again with the right size.  node-gyp-build loads
 * build/Release before the prebuilt binary.  Idempotent; refuses to patch a
 * fuse-native whose source does not look as expected.
 */
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');

const dir = path.dirname(require.resolve('fuse-native/package.json'));
const source = path.join(dir, 'fuse-native.c');
const glue = path.join(dir, 'index.js');
const ERANGE = "-34 /* ERANGE */";
const glueReplacements = [
  [
    '        value.copy(valueBuf)\n',
    `        if (valueBuf.length && value.length > valueBuf.length) return signal(${ERANGE}, valueBuf.buffer)\n        value.copy(valueBuf)\n`,
  ],
  [
    '        let ptr = 0\n        for (const name of list) {\n',
    `        let ptr = 0\n        let need = 0\n        for (const name of list) need += Buffer.byteLength(name) + 1\n        if (need > listBuf.length) return signal(${ERANGE}, listBuf.buffer)\n        for (const name of list) {\n`,
  ],
];
const replacements = [
  [
    '  FUSE_UINT64_TO_INTS_ARGV(l->atime, 5)\n',
    '  FUSE_UINT64_TO_INTS_ARGV(l->mtime, 5)\n',
  ],
  [
    '  if (implemented[op_utimens]) ops.utimens = fuse_native_utimens;\n',
    '  if (implemented[op_utimens]) ops.utimens = fuse_native_utimens;\n  ops.flag_utime_omit_ok = 1;\n',
  ],
  [
    'static uint64_t timespec_to_uint64 (const struct timespec* ts) {\n',
    'static uint64_t timespec_to_uint64 (const struct timespec* ts) {\n' +
      '  if (ts->tv_nsec == UTIME_OMIT) return 0xFFFFFFFE00000000ULL;\n' +
      '  if (ts->tv_nsec == UTIME_NOW) return 0xFFFFFFFF00000000ULL;\n',
  ],
];

/** Apply each replacement once; a file that already has it is left alone. */
function patch(file, edits) {
  const original = fs.readFileSync(file, 'utf8');
  let text = original;
  for (const [from, to] of edits) {
    if (text.includes(to)) continue; // already applied
    if (text.split(from).length !== 2) {
      console.error(`tierfs: ${path.basename(file)} of fuse-native differs from 2.2.6 (${from.trim().split('\n')[0]}); not patched`);
      process.exit(1);
    }
    text = text.replace(from, to);
  }
  if (text !== original) fs.writeFileSync(file, text);
}

patch(source, replacements);
patch(glue, glueReplacements);

const built = path.join(dir, 'build', 'Release', 'fuse.node');
if (!fs.existsSync(built) || fs.statSync(built).mtimeMs < fs.statSync(source).mtimeMs) {
  const result = spawnSync('node-gyp', ['rebuild', `--directory=${dir}`], { stdio: 'inherit' });
  if (result.status !== 0) {
    console.error('tierfs: rebuilding fuse-native failed');
    process.exit(1);
  }
}
