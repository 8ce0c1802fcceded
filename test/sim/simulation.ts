// A deterministic simulation of the whole stack: the real src/fs, tiering engine,
// flash store and SQLite metadata, on a simulated flash device and a simulated
// object store, on simulated time, every choice drawn from one seeded PRNG.
//
// The workload mixes namespace and data operations (checked against the model
// after every step), fsyncs, policies and pins, destage/release/recall/evict/GC,
// time passing (background passes), fault episodes of the object store (errors,
// throttling, hangs, damaged and short bodies, listings that lag), bit flips on
// flash, and crashes at any I/O the seed picks (mid-upload, mid-commit, mid-GC,
// during recovery): the process freezes at that call, SQLite loses its open
// transaction, the device loses its unsynced writes (some blocks survive: torn
// writes), and a new incarnation opens what is left.  After recovery:
// - every path, size and byte is explained by a model state since the last
//   fsync (fsynced data intact, nothing readable that was never written);
// - every mapped block verifies, residency totals equal a scan, fsck finds
//   nothing, and no pack object is left without its row (no orphan) nor a live
//   row without its object;
// - a bit flip answers EIO, never other bytes.
// One seed replays one run exactly: the report's digest covers every step.
import { createHash } from 'node:crypto';
import fsConstants from 'node:constants';
import { SimulatedClock } from '../../src/clock';
import { SimulatedDevice } from '../../src/device/device';
import { isTierfsError, type ErrorCode } from '../../src/errors';
import { formatFileSystem, openFileSystem, ROOT_CREDENTIALS as ROOT, ROOT_INO, type FileSystem, type Ino, type OpenFileSystem } from '../../src/fs/fs';
import { SqliteMetaStore, type MetaStore } from '../../src/meta/meta_store';
import { TierfsError } from '../../src/errors';
import { packIdOfKey, packKey, packKeyPrefix, RetryingObjectStore, type TieringEngine } from '../../src/tier/tier';
import { prng } from '../helpers/fs';
import { Model, namespaceStep, randomFile, randomPath, type Node, type Result } from '../helpers/model';
import { Gate, GatedDevice, healthyStore, noFaults, SimBucket, SimObjectStore, type FaultCounts, type StoreFaultRates } from './world';

const MiB = 2 ** 20;
/** Failures a fault can explain: EIO of every kind, and ENOSPC when the object tier cannot take what flash must shed. */
const faultCodes: ErrorCode[] = ['IO', 'CHECKSUM', 'UNAVAILABLE', 'NO_SPACE'];
/** An operation that has not completed in this much simulated time is hung. */
const stepBudgetMs = 15 * 60_000;

export interface SimulationReport {
  seed: number;
  steps: number;
  /** Operations run against tierfs (workload steps, checks excluded). */
  operationCount: number;
  simulatedMs: number;
  faults: FaultCounts;
  /** The first invariant that broke, with the step; undefined when the run passed. */
  failure?: string;
  /** A digest of every step's label and outcome and the final state: equal for equal seeds. */
  digest: string;
}

class SimulationFailure extends Error {}

/** A file system whose every call fails: the model's half of a step replays against it. */
const failingFs = new Proxy({} as FileSystem, {
  get: () => async () => {
    throw new TierfsError('IO', 'not run');
  },
});

type Outcome<T> = { kind: 'done'; value: T } | { kind: 'failed'; error: unknown } | { kind: 'crashed' };

interface Incarnation {
  clock: SimulatedClock;
  gate: Gate;
  opened: OpenFileSystem;
  fs: FileSystem;
  tier: TieringEngine;
}

/** Let every promise that can settle now settle (the dead incarnation's last microtasks included). */
async function settleReal(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** Move simulated time until `work` settles, the gate freezes (a crash) or the budget runs out (a hang: a bug). */
async function drive<T>(clock: SimulatedClock, gate: Gate, work: Promise<T>, what: string): Promise<Outcome<T>> {
  let outcome: Outcome<T> | undefined;
  work.then(
    (value) => (outcome = { kind: 'done', value }),
    (error: unknown) => (outcome = { kind: 'failed', error }),
  );
  const startedMs = clock.nowMs();
  await clock.settle();
  while (outcome === undefined) {
    if (gate.frozen) return { kind: 'crashed' };
    const next = clock.nextDueMs;
    if (next === undefined) throw new SimulationFailure(`${what}: waits for nothing that can happen (deadlock)`);
    if (next - startedMs > stepBudgetMs) throw new SimulationFailure(`${what}: not done after ${stepBudgetMs / 60_000} simulated minutes (hung)`);
    await clock.advance(Math.max(0, next - clock.nowMs()));
  }
  return outcome;
}

function codeOf(error: unknown): ErrorCode | undefined {
  return isTierfsError(error) ? error.code : undefined;
}

/** What a tree looks like, by path (the model's or one read back from tierfs). */
type Tree = Map<string, { kind: 'dir' } | { kind: 'symlink'; target: string } | { kind: 'file'; data: Buffer | undefined; size: number; ino: number; error?: string }>;

function treeOfModel(model: Model): Tree {
  const tree: Tree = new Map();
  const walk = (path: string, id: number) => {
    const node = model.node(id);
    if (node.kind === 'dir') {
      tree.set(path || '/', { kind: 'dir' });
      for (const [name, child] of node.entries) walk(`${path}/${name}`, child);
    } else if (node.kind === 'symlink') tree.set(path, { kind: 'symlink', target: node.target });
    else tree.set(path, { kind: 'file', data: node.data, size: node.data.length, ino: id });
  };
  walk('', 1);
  return tree;
}

/** Does every byte of `data` equal that byte in one of the candidates (zero past a candidate's end)? */
function bytesExplained(data: Buffer, candidates: Buffer[]): boolean {
  if (candidates.some((c) => c.equals(data))) return true;
  for (let i = 0; i < data.length; i++) {
    if (!candidates.some((c) => (i < c.length ? c[i] : 0) === data[i])) return false;
  }
  return true;
}

export async function runSimulation(options: { seed: number; steps: number; dir: string }): Promise<SimulationReport> {
  const { seed, steps, dir } = options;
  const random = prng(seed);
  const randomBytes = (count: number) => {
    const bytes = Buffer.alloc(count);
    for (let i = 0; i < count; i++) bytes[i] = Math.floor(random() * 256);
    return bytes;
  };
  const pick = <T>(items: readonly T[]): T => items[Math.floor(random() * items.length)];
  const faults = noFaults();
  const trace = createHash('sha256');
  const verbose = process.env.TIERFS_SIM_VERBOSE === '1';
  const note = (text: string) => {
    trace.update(`${text}\n`);
    if (verbose) process.stderr.write(`sim ${seed}: ${text}\n`);
  };
  const device = new SimulatedDevice(48 * MiB);
  const bucket = new SimBucket();
  await formatFileSystem(device, dir, { uid: 0, gid: 0, clock: new SimulatedClock() });
  await device.sync();
  let nowMs = new SimulatedClock().nowMs();
  let rates: StoreFaultRates = healthyStore;
  let metas: MetaStore[] = [];
  let operationCount = 0;
  let step = 0;
  /** Model states since the last fsync that reached the device: what a crash may leave. */
  let model = new Model();
  let snapshots: Model[] = [model.clone()];
  /** Model file ids whose flash blocks a bit flip damaged: their reads may answer EIO, never other bytes. */
  const damaged = new Set<number>();

  const start = async (crashAtIoCount: number): Promise<Incarnation | undefined> => {
    const clock = new SimulatedClock(nowMs);
    const gate = new Gate(crashAtIoCount);
    const store = new SimObjectStore(bucket, clock, random, () => rates, gate, faults);
    const objects = new RetryingObjectStore(store, {
      deadlineMs: 30_000,
      attemptTimeoutMs: 5_000,
      baseDelayMs: 20,
      delayMsMax: 1_000,
      clock: () => clock.nowMs(),
      random,
      sleep: (ms) => clock.sleep(ms),
      timeout: (ms) => clock.timeout(ms),
    });
    const opening = openFileSystem(new GatedDevice(device, gate), dir, {
      clock,
      commitIntervalMs: 0,
      openMeta: (metaDir) => {
        const meta = new SqliteMetaStore(metaDir, { create: false });
        metas.push(meta);
        return meta;
      },
      tier: {
        objects,
        scanIntervalMs: 1000,
        coolAfterMs: 20_000,
        packWaitMsMax: 5_000,
        recallTimeoutMs: 15_000,
        watermarkHighPercent: 70,
        watermarkLowPercent: 50,
        randomBytes,
      },
    });
    const outcome = await drive(clock, gate, opening, 'open');
    if (outcome.kind === 'crashed') {
      await crashWorld(clock);
      faults.crashDuringRecovery += 1;
      return undefined;
    }
    if (outcome.kind === 'failed') throw new SimulationFailure(`open after a crash failed: ${(outcome.error as Error)?.stack ?? outcome.error}`);
    const opened = outcome.value;
    const inc = { clock, gate, opened, fs: opened.fs, tier: opened.tier! };
    const listed = await drive(clock, gate, inc.tier.listed(), 'start-up listing');
    if (listed.kind === 'crashed') {
      await crashWorld(clock);
      faults.crashDuringRecovery += 1;
      return undefined;
    }
    return inc;
  };

  /** The process died: SQLite loses its open transaction, the device its unsynced writes (some blocks survive). */
  const crashWorld = async (clock: SimulatedClock) => {
    await settleReal();
    for (const meta of metas) (meta as SqliteMetaStore).crash();
    metas = [];
    const tornChance = random() < 0.5 ? 0 : 0.2 + random() * 0.6;
    const { droppedBlockCount, keptBlockCount } = device.crash(() => random() < tornChance);
    faults.crash += 1;
    if (droppedBlockCount > 0) faults.unsyncedWritesDropped += 1;
    if (droppedBlockCount > 0 && keptBlockCount > 0) faults.tornWrites += 1;
    nowMs = clock.nowMs() + 1000 + Math.floor(random() * 5000);
    note(`crash at ${clock.nowMs()}: dropped ${droppedBlockCount} kept ${keptBlockCount}`);
  };

  const fail = (message: string): never => {
    throw new SimulationFailure(`step ${step}: ${message}`);
  };

  /** Read the whole tree back from tierfs (store healthy: nothing else to explain an error). */
  const readTree = async (inc: Incarnation): Promise<Tree> => {
    const tree: Tree = new Map();
    const { fs } = inc;
    const walk = async (path: string, ino: Ino) => {
      const attr = await fs.getattr(ino);
      const type = attr.mode & fsConstants.S_IFMT;
      if (type === fsConstants.S_IFDIR) {
        tree.set(path || '/', { kind: 'dir' });
        for (const entry of await fs.readdir(ino, 0, 100_000, ROOT)) if (entry.name !== '.' && entry.name !== '..') await walk(`${path}/${entry.name}`, entry.ino);
      } else if (type === fsConstants.S_IFLNK) tree.set(path, { kind: 'symlink', target: await fs.readlink(ino) });
      else {
        const fh = await fs.open(ino, fsConstants.O_RDONLY, ROOT);
        let data: Buffer | undefined;
        let failure: string | undefined;
        try {
          data = Buffer.from(await fs.read(fh, 0, attr.sizeBytes + 1));
        } catch (error) {
          if (!faultCodes.includes(codeOf(error)!)) throw error;
          failure = (error as Error).message; // a damaged file: judged by the caller
        } finally {
          await fs.release(fh);
        }
        tree.set(path, { kind: 'file', data, size: attr.sizeBytes, ino, error: failure });
      }
    };
    const outcome = await drive(inc.clock, inc.gate, walk('', ROOT_INO), 'reading the tree back');
    if (outcome.kind !== 'done') fail(`reading the tree back: ${outcome.kind === 'failed' ? (outcome.error as Error)?.stack : 'crashed'}`);
    return tree;
  };

  /** The model file id at a path, if it is a file. */
  const fileIdAt = (path: string): number | undefined => {
    try {
      const id = model.resolve(path);
      return model.node(id).kind === 'file' ? id : undefined;
    } catch {
      return undefined;
    }
  };

  /** Compare the whole tree with the model now (no crash since the last step). */
  const compareNow = async (inc: Incarnation, label: string) => {
    const ours = await readTree(inc);
    const theirs = treeOfModel(model);
    for (const [path, node] of theirs) {
      const got = ours.get(path);
      if (!got) fail(`${label}: ${path} is missing`);
      if (got!.kind !== node.kind) fail(`${label}: ${path} is a ${got!.kind}, the model has a ${node.kind}`);
      if (node.kind === 'symlink' && got!.kind === 'symlink' && got!.target !== node.target) fail(`${label}: symlink ${path} points elsewhere`);
      if (node.kind === 'file' && got!.kind === 'file') {
        if (got!.size !== node.size) fail(`${label}: ${path} has ${got!.size} bytes, the model ${node.size}`);
        if (got!.data === undefined) {
          if (!damaged.has(node.ino)) fail(`${label}: ${path} answered EIO with nothing to explain it: ${got!.error}`);
        } else if (!got!.data.equals(node.data!)) fail(`${label}: ${path} reads other bytes than were written`);
      }
    }
    for (const path of ours.keys()) if (!theirs.has(path)) fail(`${label}: ${path} exists but was never made (or was removed)`);
  };

  /** After a crash: is what tierfs kept explained by the model states since the last fsync?  Then adopt it as the model. */
  const checkRecovered = async (inc: Incarnation) => {
    const ours = await readTree(inc);
    const candidates = snapshots.map(treeOfModel);
    for (const [path, got] of ours) {
      const known = candidates.map((c) => c.get(path)).filter((n) => n !== undefined && n.kind === got.kind);
      if (known.length === 0) fail(`after a crash: ${path} (${got.kind}) is in no state since the last fsync`);
      if (got.kind === 'symlink' && !known.some((n) => n!.kind === 'symlink' && n!.target === got.target)) fail(`after a crash: symlink ${path} points where it never did`);
      if (got.kind === 'file') {
        const files = known as { kind: 'file'; data: Buffer; size: number; ino: number }[];
        if (!files.some((f) => f.size === got.size)) fail(`after a crash: ${path} has ${got.size} bytes, a size it never had since the last fsync (${files.map((f) => f.size).join(', ')})`);
        if (got.data === undefined) {
          if (!files.some((f) => damaged.has(f.ino))) fail(`after a crash: ${path} answers EIO with nothing to explain it: ${got.error}`);
        } else if (!bytesExplained(got.data, files.map((f) => f.data))) fail(`after a crash: ${path} holds bytes that were never written there`);
      }
    }
    // What every state since the last fsync has (fsynced and not removed since) must still be there.
    for (const [path, node] of candidates[0]) {
      if (candidates.every((c) => c.get(path)?.kind === node.kind) && !ours.has(path)) fail(`after a crash: ${path} was fsynced and never removed, but is gone`);
    }
    // Adopt what survived as the model (and what is damaged stays damaged).
    const rebuilt = new Model();
    const idOfIno = new Map<number, number>();
    const wasDamaged = new Set(damaged);
    damaged.clear();
    const paths = [...ours.keys()].filter((p) => p !== '/').sort((a, b) => a.split('/').length - b.split('/').length || (a < b ? -1 : 1));
    const unreadable: string[] = [];
    for (const path of paths) {
      const got = ours.get(path)!;
      if (got.kind === 'file' && got.data === undefined) {
        unreadable.push(path); // its bytes are unknown: out of play
        continue;
      }
      const slash = path.lastIndexOf('/');
      const parent = rebuilt.resolve(path.slice(0, slash));
      const entries = (rebuilt.node(parent) as Node & { kind: 'dir' }).entries;
      if (got.kind === 'file' && idOfIno.has(got.ino)) {
        const id = idOfIno.get(got.ino)!;
        entries.set(path.slice(slash + 1), id);
        (rebuilt.node(id) as Node & { kind: 'file' }).nlink += 1;
        continue;
      }
      const id = rebuilt.nextId++;
      if (got.kind === 'dir') rebuilt.nodes.set(id, { kind: 'dir', entries: new Map() });
      else if (got.kind === 'symlink') rebuilt.nodes.set(id, { kind: 'symlink', target: got.target });
      else {
        idOfIno.set(got.ino, id);
        rebuilt.nodes.set(id, { kind: 'file', data: got.data!, nlink: 1 });
        if (candidates.some((c) => { const n = c.get(path); return n?.kind === 'file' && wasDamaged.has(n.ino); })) damaged.add(id);
      }
      entries.set(path.slice(slash + 1), id);
    }
    for (const path of unreadable) {
      const slash = path.lastIndexOf('/');
      const removed = await drive(inc.clock, inc.gate, (async () => inc.fs.unlink(inc.fs.resolvePath(path.slice(0, slash)).ino, path.slice(slash + 1), ROOT))(), `remove ${path}`);
      if (removed.kind !== 'done') fail(`removing the unreadable ${path} after recovery: ${removed.kind === 'failed' ? (removed.error as Error)?.message : 'crashed'}`);
    }
    if (unreadable.length > 0) {
      // The model starts again from here: what was taken out of play must stay out after the next crash.
      const synced = await drive(inc.clock, inc.gate, inc.fs.fsync(), 'fsync after recovery');
      if (synced.kind !== 'done') fail('the fsync after recovery did not complete');
    }
    model = rebuilt;
    snapshots = [model.clone()];
    await checkStructure(inc, 'after recovery');
  };

  /** Every mapped block verifies (but damaged ones), totals equal a scan, fsck is clean, and the bucket holds no orphan. */
  const checkStructure = async (inc: Incarnation, label: string) => {
    const { opened, clock, gate } = inc;
    const verified = await drive(clock, gate, opened.store.verifyAll(), `${label}: verify`);
    if (verified.kind !== 'done') fail(`${label}: verifying every block: ${verified.kind}`);
    const bad = (verified as { value: { checksumErrors: { ino: number }[] } }).value.checksumErrors;
    if (bad.length > 0 && damaged.size === 0) fail(`${label}: ${bad.length} mapped block(s) fail their checksum with no bit flip to explain it`);
    const kept = opened.meta.residencyTotals();
    const scanned = opened.meta.residencyTotalsScanned();
    if (JSON.stringify(kept) !== JSON.stringify(scanned)) fail(`${label}: residency totals ${JSON.stringify(kept)} but a scan counts ${JSON.stringify(scanned)}`);
    // Listings lag by at most 5 s: after that a listing sees everything, and orphans must go.
    await clock.advance(6000);
    const reconciled = await drive(clock, gate, inc.tier.reconcile(), `${label}: reconcile`);
    if (reconciled.kind !== 'done') fail(`${label}: reconcile: ${reconciled.kind === 'failed' ? (reconciled.error as Error)?.message : 'crashed'}`);
    const prefix = packKeyPrefix(inc.tier.fsUuid);
    for (const key of bucket.objects.keys()) {
      if (!key.startsWith(prefix)) continue;
      const packId = packIdOfKey(inc.tier.fsUuid, key);
      if (packId === undefined || !opened.meta.getPack(packId)) fail(`${label}: ${key} is in the bucket with no pack row (an orphan)`);
    }
    for (const pack of opened.meta.packsInState('live')) {
      const key = packKey(inc.tier.fsUuid, pack.packId);
      if (!bucket.objects.has(key)) fail(`${label}: live pack ${pack.packId} has no object in the bucket`);
    }
    const report = await drive(clock, gate, inc.fs.check({ repair: false, deep: false }, inc.tier), `${label}: fsck`);
    if (report.kind !== 'done') fail(`${label}: fsck: ${report.kind === 'failed' ? (report.error as Error)?.message : 'crashed'}`);
    const problems = (report as { value: { problems: { kind: string; detail: string }[] } }).value.problems.filter((p) => !(p.kind === 'flash-checksum' && damaged.size > 0));
    if (problems.length > 0) fail(`${label}: fsck: ${problems.map((p) => `${p.kind}: ${p.detail}`).join('; ')}`);
  };

  /** Remove every name of the file at `path` on both sides (after a write the object tier could not complete). */
  const forget = async (inc: Incarnation, path: string) => {
    const id = fileIdAt(path);
    if (id === undefined) return;
    const names: string[] = [];
    const collect = (at: string, node: number) => {
      const n = model.node(node);
      if (n.kind !== 'dir') return;
      for (const [name, child] of n.entries) {
        if (child === id) names.push(`${at}/${name}`);
        collect(`${at}/${name}`, child);
      }
    };
    collect('', 1);
    for (const name of names) {
      const slash = name.lastIndexOf('/');
      const outcome = await drive(inc.clock, inc.gate, (async () => {
        const parent = inc.fs.resolvePath(name.slice(0, slash));
        await inc.fs.unlink(parent.ino, name.slice(slash + 1), ROOT);
      })(), `forget ${name}`);
      if (outcome.kind === 'crashed') return;
      if (outcome.kind === 'failed') fail(`removing ${name} after a failed write: ${(outcome.error as Error)?.message}`);
      const parent = model.parent(name);
      parent.dir.delete(parent.name);
      model.drop(id);
      snapshots.push(model.clone());
    }
    // It stays in `damaged`: the states since the last fsync still hold it, and a crash may bring it back.
  };

  let inc: Incarnation | undefined;
  try {
    while (!inc) inc = await start(Infinity);
    for (step = 0; step < steps; step++) {
      const current: Incarnation = inc!;
      const { fs, tier, clock, gate } = current;
      // Arm a crash now and then: it hits at one of the next few dozen I/Os, wherever they are.
      if (gate.crashAtIoCount === Infinity && random() < 0.03) gate.crashAtIoCount = gate.ioCount + 1 + Math.floor(random() * 60);
      const faultsActive = rates !== healthyStore;
      const roll = random();
      const p = randomPath(random, model);
      let label = '';
      let changed = false;
      let outcome: Outcome<unknown>;
      let inFlight: (() => Promise<Model>) | undefined;
      if (roll < 0.62) {
        // The draws a step makes all come before tierfs is called: recorded, they replay the model's half alone.
        const draws: number[] = [];
        const recording = () => {
          const value = random();
          draws.push(value);
          return value;
        };
        const before = model.clone();
        inFlight = async () => {
          const effect = before.clone();
          await namespaceStep(failingFs, effect, () => draws.shift()!, roll * (0.9 / 0.62), p, seed, step).catch(() => undefined);
          return effect;
        };
        const work = namespaceStep(fs, model, recording, roll * (0.9 / 0.62), p, seed, step);
        outcome = await drive(clock, gate, work, `step ${step}`);
        if (outcome.kind === 'done') {
          const r = outcome.value as { label: string; ours: Result; theirs: Result; bytesDiffer: boolean };
          label = r.label;
          const ourCode = r.ours.ok ? 'ok' : r.ours.code;
          const theirCode = r.theirs.ok ? 'ok' : r.theirs.code;
          const fileId = fileIdAt(p);
          const flashFull = current.opened.store.usedBytes > current.opened.store.capacityBytes / 2;
          const explained =
            !r.ours.ok && faultCodes.includes(r.ours.code) && (faultsActive || (fileId !== undefined && damaged.has(fileId)) || (r.ours.code === 'NO_SPACE' && flashFull));
          if (r.bytesDiffer) fail(`${label}: read other bytes than were written`);
          if (ourCode !== theirCode && !explained) fail(`${label}: tierfs ${ourCode}, the model ${theirCode}`);
          if (explained && r.theirs.ok && !label.startsWith('read')) await forget(current, p); // the model applied what tierfs refused
          changed = r.theirs.ok && !label.startsWith('read');
          note(`${label} ${ourCode}`);
        }
      } else if (roll < 0.70) {
        label = 'fsync';
        outcome = await drive(clock, gate, fs.fsync(), label);
        if (outcome.kind === 'done') snapshots = [];
        if (outcome.kind === 'failed') fail(`fsync failed: ${(outcome.error as Error)?.message}`);
        changed = true;
      } else if (roll < 0.80) {
        const action = pick(['destage', 'destage', 'release', 'release', 'recall', 'gc', 'evict'] as const);
        const file = randomFile(random, model) ?? p;
        label = `${action} ${file}`;
        outcome = await drive(clock, gate, (async () => {
          if (action === 'gc') return tier.collectGarbage();
          if (action === 'evict') return tier.evictTo(0);
          const attr = fs.resolvePath(file);
          if ((attr.mode & fsConstants.S_IFMT) !== fsConstants.S_IFREG) return 0;
          if (action === 'destage') return tier.destage({ ino: attr.ino });
          if (action === 'release') return tier.release(attr.ino);
          return tier.recallFile(attr.ino);
        })(), label);
      } else if (roll < 0.84) {
        const mode = pick(['auto', 'all', 'pin', 'never'] as const);
        const name = pick(['p1', 'p2', 'p3']);
        const glob = pick(['/a*', '/*/b', '**/c', '/dir/**', '/x']);
        const remove = random() < 0.3;
        label = remove ? `policy rm ${name}` : `policy ${name} ${mode} ${glob}`;
        outcome = await drive(clock, gate, remove ? tier.deletePolicy(name) : tier.putPolicy({ name, pathGlob: glob, mode, coolAfterMs: Math.floor(random() * 30_000), sizeBytesMin: 0, target: 'default', compress: random() < 0.3, durable: 'flash' }), label);
      } else if (roll < 0.86) {
        const file = randomFile(random, model);
        label = `pin ${file}`;
        outcome = await drive(clock, gate, (async () => (file === undefined ? false : tier.pin(fs.resolvePath(file).ino, random() < 0.6)))(), label);
      } else if (roll < 0.94) {
        const ms = Math.floor(random() * 30_000);
        label = `time passes ${ms} ms`;
        outcome = await drive(clock, gate, clock.sleep(ms), label);
      } else if (roll < 0.97) {
        rates =
          rates === healthyStore
            ? { error: random() * 0.3, throttle: random() * 0.2, hang: random() * 0.15, corruptBody: random() * 0.3, shortBody: random() * 0.2, listingLag: random() * 0.5 }
            : healthyStore;
        label = rates === healthyStore ? 'object store healthy' : `object store faulty ${JSON.stringify(rates)}`;
        outcome = { kind: 'done', value: undefined };
        if (rates === healthyStore && gate.crashAtIoCount === Infinity) {
          current.tier.dropRecallCache();
          await compareNow(current, `after a fault episode (step ${step})`);
        }
      } else {
        // A bit flip in a block of data on flash: its reads must answer EIO from now on, never other bytes.
        const onFlash = [...current.opened.meta.everyExtent()].filter((e) => e.flashOffsetBytes !== null);
        const e = onFlash.length > 0 ? pick(onFlash) : undefined;
        const path = e === undefined ? undefined : tier.pathOf(e.ino);
        const id = path === undefined ? undefined : fileIdAt(path);
        if (e !== undefined && id !== undefined) {
          device.corrupt(e.flashOffsetBytes! + Math.floor(random() * e.lengthBytes));
          damaged.add(id);
          faults.bitFlip += 1;
        }
        label = `bit flip in ${path ?? 'nothing'}`;
        outcome = { kind: 'done', value: undefined };
      }
      operationCount += 1;
      if (outcome.kind === 'failed' && !isTierfsError(outcome.error)) fail(`${label}: ${(outcome.error as Error)?.stack ?? outcome.error}`);
      if (outcome.kind !== 'crashed') {
        note(`${step} ${label} ${outcome.kind}${outcome.kind === 'failed' ? ` ${codeOf(outcome.error)}` : ''} @${clock.nowMs()}`);
        if (changed) snapshots.push(model.clone());
        if (snapshots.length > 12) {
          // Bound the states a crash may leave: an fsync makes the newest one the only one.
          const synced = await drive(clock, gate, fs.fsync(), 'fsync');
          if (synced.kind === 'done') snapshots = [model.clone()];
        }
        if (!gate.frozen && gate.crashAtIoCount === Infinity && step % 10 === 9 && rates === healthyStore) await compareNow(current, `step ${step}`);
      }
      if (gate.frozen) {
        // The process died at an I/O of this step (or of a background pass it waited for).  A namespace
        // step in flight may have reached the metadata whole or in part: its effect is one more candidate.
        if (inFlight) snapshots.push(await inFlight());
        await crashWorld(clock);
        for (inc = undefined; !inc; ) inc = await start(random() < 0.3 ? 1 + Math.floor(random() * 8) : Infinity); // sometimes a crash during recovery itself
        inc.gate.crashAtIoCount = Infinity;
        rates = healthyStore;
        await checkRecovered(inc);
      }
    }
    rates = healthyStore;
    inc!.gate.crashAtIoCount = Infinity;
    inc!.tier.dropRecallCache();
    const synced = await drive(inc!.clock, inc!.gate, inc!.fs.fsync(), 'final fsync');
    if (synced.kind !== 'done') fail('the final fsync did not complete');
    await compareNow(inc!, 'at the end');
    await checkStructure(inc!, 'at the end');
    nowMs = inc!.clock.nowMs();
    note(`end @${nowMs} objects ${[...bucket.objects.keys()].sort().join(',').replaceAll(inc!.tier.fsUuid, 'UUID')}`); // the UUID is the format's own random
    await drive(inc!.clock, inc!.gate, inc!.opened.close(), 'close');
    return { seed, steps, operationCount, simulatedMs: nowMs - new SimulatedClock().nowMs(), faults, digest: trace.digest('hex') };
  } catch (error) {
    for (const meta of metas) (meta as SqliteMetaStore).crash();
    if (!(error instanceof SimulationFailure)) throw error;
    return { seed, steps, operationCount, simulatedMs: (inc?.clock.nowMs() ?? nowMs) - new SimulatedClock().nowMs(), faults, failure: error.message, digest: trace.digest('hex') };
  }
}
