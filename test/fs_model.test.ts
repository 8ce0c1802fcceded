// Model-based test of src/fs: random sequences of namespace and data operations run
// on tierfs and on an in-memory model; error codes and contents are compared after
// every step.  Steps include fsync, clean reopen and crash (metadata back to the last
// commit), so persistence and crash consistency are checked against the model too, and
// destage, release, recall and pack GC, which must change nothing a program can see.
// Replay a failure with TIERFS_SEED=<seed>; TIERFS_MODEL_STEPS sets the length.
import t, { type Test } from 'tap';
import fsConstants from 'node:constants';
import { ROOT_CREDENTIALS as ROOT, type OpenFileSystem } from '../src/fs/fs';
import { openFileSystem } from '../src/fs/fs';
import { formatScratch, prng, seedFromEnv } from './helpers/fs';
import { compareTrees, Model, namespaceStep, randomFile, randomPath, run, type Result } from './helpers/model';

/** Bytes the destage steps of all runs moved to packs (the tier steps must not be no-ops). */
let tieredBytes = 0;

async function runModel(t: Test, seed: number, steps: number): Promise<void> {
  t.comment(`seed ${seed} (replay with TIERFS_SEED=${seed})`);
  const random = prng(seed);
  const scratch = await formatScratch(t, 256 * 2 ** 20);
  const options = { commitIntervalMs: 0, tier: { url: `file://${scratch.dir}/objects`, scanIntervalMs: 0 } };
  let opened: OpenFileSystem = await openFileSystem(scratch.flash, scratch.meta, options);
  t.teardown(() => opened.close().catch(() => undefined));
  let model = new Model();
  let durable = model.clone();

  for (let step = 0; step < steps; step++) {
    const fs = opened.fs;
    const roll = random();
    const p = randomPath(random, model);
    let label: string;
    let ours: Result;
    let theirs: Result;
    if (roll < 0.9) {
      const result = await namespaceStep(fs, model, random, roll, p, seed, step);
      ({ label, ours, theirs } = result);
      if (result.bytesDiffer) return void t.fail(`step ${step}: ${label}: other bytes than the model (seed ${seed})`);
    } else if (roll < 0.93) {
      // Tiering moves bytes between flash and packs; the model sees no change at all.
      const action = ['destage', 'destage', 'release', 'recall', 'gc'][Math.floor(random() * 5)];
      const file = randomFile(random, model) ?? p;
      label = `${action} ${file}`;
      const tier = opened.tier!;
      const commits = opened.store.counters.commitCount;
      ours = await run(async () => {
        if (action === 'gc') return void (await tier.collectGarbage());
        const attr = await fs.lookupPath(file, ROOT).catch(() => undefined);
        if (!attr || (attr.mode & fsConstants.S_IFMT) !== fsConstants.S_IFREG) return;
        if (action === 'destage') tieredBytes += await tier.destage({ ino: attr.ino });
        else if (action === 'release') await tier.release(attr.ino);
        else await tier.recallFile(attr.ino);
      });
      theirs = { ok: true };
      // Tiering commits (a pack's row before its upload, residency after): like an fsync, what was done is durable.
      if (opened.store.counters.commitCount !== commits) durable = model.clone();
    } else if (roll < 0.94) {
      label = 'fsync';
      ours = await run(() => fs.fsync());
      theirs = { ok: true };
      durable = model.clone();
    } else if (roll < 0.97) {
      label = 'reopen';
      await opened.close();
      opened = await openFileSystem(scratch.flash, scratch.meta, options);
      ours = theirs = { ok: true };
      durable = model.clone();
    } else {
      label = 'crash';
      await opened.tier?.stop(); // its timers must not outlive the database they write to
      opened.meta.crash();
      await opened.device.close();
      opened = await openFileSystem(scratch.flash, scratch.meta, options);
      model = durable.clone();
      ours = theirs = { ok: true };
    }
    const outcome = (r: Result) => (r.ok ? 'ok' : r.code);
    if (outcome(ours) !== outcome(theirs)) {
      t.fail(`step ${step}: ${label}: tierfs ${outcome(ours)}, model ${outcome(theirs)} (seed ${seed})`);
      return;
    }
    if ((step % 25 === 0 || label === 'crash' || label === 'reopen') && !(await compareTrees(t, opened.fs, model, `step ${step} after ${label}`))) {
      t.comment(`seed ${seed}`);
      return;
    }
    if (step % 25 === 0 || label === 'crash') {
      // The running residency totals (kept by triggers, what status shows) against a scan, after crashes too.
      const kept = opened.meta.residencyTotals();
      const scanned = opened.meta.residencyTotalsScanned();
      if (JSON.stringify(kept) !== JSON.stringify(scanned)) return void t.same(kept, scanned, `step ${step} after ${label}: residency totals (seed ${seed})`);
    }
  }
  t.ok(await compareTrees(t, opened.fs, model, 'end'), 'final tree matches the model');
  const report = await opened.store.verifyAll();
  t.same(report.checksumErrors, [], 'every mapped block verifies');
  t.same(opened.meta.residencyTotals(), opened.meta.residencyTotalsScanned(), 'the running residency totals equal a scan of the extents');
}

const steps = Number(process.env.TIERFS_MODEL_STEPS ?? 400);
const baseSeed = seedFromEnv();
for (let i = 0; i < (process.env.TIERFS_SEED ? 1 : 3); i++) {
  t.test(`model run ${i}`, (t) => runModel(t, baseSeed + i, steps));
}
if (!process.env.TIERFS_SEED && steps >= 200)
  t.test('the tier steps did tier', async (t) => t.ok(tieredBytes > 0, `destage steps moved ${tieredBytes} bytes to packs`));
