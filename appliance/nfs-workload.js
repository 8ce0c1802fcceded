// The boot test's random read/write workload over a network mount (NFS or
// SMB): files created, written at random offsets and lengths, truncated,
// renamed and removed through DIR, every read compared with a model kept in
// memory, and at the end every file read back whole (and, with a second
// directory naming the same files through another path, through that too).
// Usage: node nfs-workload.js DIR [SAME_FILES_ELSEWHERE] [SEED] [STEPS]
'use strict';
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

const [dir, elsewhere, seedText, stepsText] = process.argv.slice(2);
let seed = Number(seedText ?? 1) >>> 0 || 1;
const steps = Number(stepsText ?? 400);
const random = () => {
  seed ^= seed << 13;
  seed ^= seed >>> 17;
  seed ^= seed << 5;
  return (seed >>> 0) / 2 ** 32;
};
const pick = (n) => Math.floor(random() * n);
const work = path.join(dir, `workload-${process.pid}`);
fs.mkdirSync(work);
const model = new Map(); // name -> Buffer
const fail = (message) => {
  console.error(`FAIL ${message}`);
  process.exit(1);
};

for (let step = 0; step < steps; step++) {
  const names = [...model.keys()];
  const op = names.length === 0 ? 0 : pick(10);
  const name = names.length === 0 || op === 0 ? `f${step}` : names[pick(names.length)];
  const file = path.join(work, name);
  if (op <= 4) {
    // Write at a random offset (holes included), unaligned lengths.
    const old = model.get(name) ?? Buffer.alloc(0);
    const offset = pick(old.length + 65536);
    const data = crypto.randomBytes(1 + pick(200000));
    const fd = fs.openSync(file, fs.existsSync(file) ? 'r+' : 'w+');
    fs.writeSync(fd, data, 0, data.length, offset);
    fs.closeSync(fd); // close-to-open: the next open sees it
    const next = Buffer.alloc(Math.max(old.length, offset + data.length));
    old.copy(next);
    data.copy(next, offset);
    model.set(name, next);
  } else if (op <= 7) {
    const expected = model.get(name);
    const offset = pick(expected.length + 1);
    const length = pick(expected.length - offset + 4096);
    const fd = fs.openSync(file, 'r');
    const got = Buffer.alloc(length);
    const n = fs.readSync(fd, got, 0, length, offset);
    fs.closeSync(fd);
    const want = expected.subarray(offset, offset + length);
    if (n !== want.length || !got.subarray(0, n).equals(want)) fail(`step ${step}: read ${name} at ${offset}+${length}: ${n} bytes, not the ${want.length} written`);
  } else if (op === 8) {
    const size = pick((model.get(name).length * 3) / 2 + 1);
    fs.truncateSync(file, size);
    const next = Buffer.alloc(size);
    model.get(name).copy(next, 0, 0, Math.min(size, model.get(name).length));
    model.set(name, next);
  } else if (pick(2) === 0) {
    const to = `r${step}`;
    fs.renameSync(file, path.join(work, to));
    model.set(to, model.get(name));
    model.delete(name);
  } else {
    fs.unlinkSync(file);
    model.delete(name);
  }
}
const listed = fs.readdirSync(work).sort();
const expectedNames = [...model.keys()].sort();
if (listed.join() !== expectedNames.join()) fail(`the directory lists ${listed.join(',')}, not ${expectedNames.join(',')}`);
for (const base of elsewhere ? [work, path.join(elsewhere, path.basename(work))] : [work]) {
  for (const [name, data] of model) {
    if (!fs.readFileSync(path.join(base, name)).equals(data)) fail(`${path.join(base, name)}: not the bytes written`);
  }
}
console.log(`ok ${steps} steps, ${model.size} files, ${[...model.values()].reduce((n, b) => n + b.length, 0)} bytes verified`);
