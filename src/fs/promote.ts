/**
 * Promote a follower to writer (tierfs promote, with its serve --follow
 * stopped): the writer role passes to this appliance only once the writer
 * lease is free — released, or not renewed for a whole TTL as this
 * appliance observes it — and the conditional put that takes it is what
 * fences the old writer (src/tier/lease.ts).  Then the follower applies the
 * rest of the log (what the old writer uploaded before it lost the lease),
 * and its metadata becomes a writer's: a new metadata generation (inode
 * numbers the old writer issued after its last upload may be issued again:
 * NFS handles from before must not reach new files), a new appliance id,
 * and a snapshot at its first serve (its own log starts after the change
 * it applied).  It keeps the lease without renewing it: the serve that
 * follows is the same appliance and retakes it at once.
 *
 * On a target that ignores conditional puts, two promotions at once could
 * both win: refused unless `force`.
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { systemClock, type Clock } from '../clock';
import { TierfsError } from '../errors';
import { log } from '../log';
import { SqliteMetaStore } from '../meta/meta_store';
import { Follower, followerSetting } from '../tier/follower';
import { leaseKey, leaseProbeKey, WriterLease } from '../tier/lease';
import { conditionalWritesWork, type ObjectStore } from '../tier/object_store';
import { openTarget } from '../tier/tier';
import { keyCheck } from './format';

export interface PromoteRequest {
  metaDir: string;
  encryptionKey?: Buffer;
  /** The new writer's lease TTL (serve's leaseTtl). */
  ttlMs: number;
  /** How long to wait for the old writer's lease to expire (default 1.5 times the TTL it was written with, at least ours). */
  waitMs?: number;
  /** Promote even on a target that ignores conditional puts (two promotions at once could both win). */
  force?: boolean;
  clock?: Clock;
  openStore?: (url: string) => ObjectStore;
}

export interface PromoteResult {
  fsUuid: string;
  /** The last change applied: the new writer's log continues after it. */
  seq: number;
  generation: number;
  /** Who held the writer role before. */
  previousHost: string | null;
}

function refuse(message: string): never {
  throw new TierfsError('USAGE', `promote: ${message}`);
}

export async function promoteFollower(request: PromoteRequest): Promise<PromoteResult> {
  const clock = request.clock ?? systemClock;
  const meta = new SqliteMetaStore(request.metaDir, { create: false }); // refused while serve --follow holds it
  let store: ObjectStore | undefined;
  try {
    if (meta.setting(followerSetting) !== '1') refuse(`${request.metaDir} is not a follower's metadata (serve --follow makes one)`);
    const fsUuid = meta.setting('uuid')!;
    const url = meta.setting('target');
    if (url === undefined) refuse('the follower records no target');
    const check = meta.setting('encryptionKeyCheck');
    if (check !== undefined && request.encryptionKey === undefined) refuse('this file system encrypts its object tier: give its key (--encryption-key FILE)');
    if (check !== undefined && keyCheck(request.encryptionKey!, fsUuid) !== check) refuse('the encryption key is not the one this file system was formatted with');
    store = (request.openStore ?? ((u: string) => openTarget(u, undefined, clock)))(url);
    const target = store;
    if (!request.force && !(await conditionalWritesWork(target, leaseProbeKey(fsUuid))))
      refuse(`${target.description} ignores conditional writes: two promotions at once could both take the writer role; --force if you are sure no other appliance promotes or writes`);
    const crypto = { fsUuid, key: request.encryptionKey ?? null };
    const follower = new Follower(meta, () => target, crypto, clock, 1000, async () => meta.commit());
    await follower.catchUp(); // most of the log before the lease: the old writer's role ends with as little left to apply as possible
    const generation = Number(meta.setting('generation') ?? 1) + 1;
    const lease = new WriterLease({
      store: () => target, fsUuid, writerId: randomBytes(16).toString('hex'), host: os.hostname(), clock, ttlMs: request.ttlMs, generation,
      logSeq: () => follower.status().appliedSeq,
    });
    const before = await target.getVersioned(leaseKey(fsUuid));
    const previousHost = before ? ((JSON.parse(before.body.toString('utf8')) as { host?: string }).host ?? null) : null;
    const waitMs = request.waitMs ?? Math.round(1.5 * Math.max(request.ttlMs, 30_000));
    log.info('promote: waiting for the writer lease to be free (released, or not renewed for a whole TTL)', { waitMs });
    if (!(await lease.acquire(waitMs, { onlyFromFirstHolder: true }))) throw new TierfsError('BUSY', `promote: ${lease.status().lostReason}`);
    try {
      await follower.catchUp(); // what the old writer uploaded before it was fenced
      if (follower.status().state !== 'following')
        throw new TierfsError('CORRUPT', 'promote: the log after the change this follower applied is gone from the bucket; restore a new copy instead');
      const seq = follower.status().appliedSeq;
      meta.mutate(() => {
        meta.setSetting(followerSetting, '');
        meta.setSetting('generation', String(generation));
        meta.setSetting('writerId', lease.writerId);
        meta.setSetting('replicaSnapshotSeq', ''); // its own log starts here: a snapshot first
        meta.setSetting('promotedMs', String(clock.nowMs()));
      });
      meta.restartReplicaLog(seq);
      meta.commit();
      return { fsUuid, seq, generation, previousHost };
    } finally {
      await lease.detach();
    }
  } finally {
    meta.close();
    await store?.close();
  }
}
