/**
 * The object targets of one file system: "default" (the one given to
 * format) and those added with `tierfs target add`, recorded in the
 * metadata by URL.  Each remembers its last failure (cleared by the next
 * success) for status and health.
 *
 * One probe serves the CLI (format --target, before there is a file
 * system) and the engine (target add and test): write an object, read it
 * back, delete it, each step timed.  A target that cannot do all three is
 * refused before anything is recorded.
 */
import { randomBytes } from 'node:crypto';
import type { Clock } from '../clock';
import { TierfsError } from '../errors';
import { log } from '../log';
import type { MetaStore } from '../meta/meta_store';
import { FencedObjectStore, type Fence } from './lease';
import type { ObjectStore } from './object_store';

/** One object target: its store, and the last failure talking to it (cleared by the next success). */
export interface Target {
  name: string;
  url: string;
  store: ObjectStore;
  lastError?: string;
}

export interface ProbeReport {
  url: string;
  ok: boolean;
  error?: string;
  steps: { step: string; ms: number }[];
}

const TARGET_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/**
 * Write, read back and delete a probe object at `<keyPrefix>/probe/<random>`
 * (never in a pack prefix); each step timed.  Never throws: the report says
 * what failed.
 */
export async function probeStore(store: ObjectStore, keyPrefix: string, monotonicMs: () => number = () => performance.now()): Promise<ProbeReport> {
  const key = `${keyPrefix}/probe/${randomBytes(8).toString('hex')}`;
  const body = randomBytes(4096);
  const steps: { step: string; ms: number }[] = [];
  const timed = async <T>(step: string, fn: () => Promise<T>): Promise<T> => {
    const startedMs = monotonicMs();
    try {
      return await fn();
    } finally {
      steps.push({ step, ms: Math.round((monotonicMs() - startedMs) * 100) / 100 });
    }
  };
  try {
    await timed('put', () => store.put(key, [body]));
    const back = await timed('get', () => store.get(key));
    if (!back.equals(body)) throw new Error('the probe object read back differently');
    await timed('delete', () => store.delete(key));
    return { url: store.description, ok: true, steps };
  } catch (error) {
    await store.delete(key).catch(() => undefined);
    return { url: store.description, ok: false, error: ((error as Error)?.message ?? String(error)).split('\n')[0], steps };
  }
}

export class TargetSet {
  /** By name, "default" first. */
  private readonly byName = new Map<string, Target>();

  constructor(
    private readonly meta: MetaStore,
    private readonly fsUuid: string,
    private readonly clock: Clock,
    defaultStore: ObjectStore,
    /** Opens the targets added later; without it, only the default target is known. */
    private readonly openStore: ((url: string) => ObjectStore) | undefined,
    /** Makes a metadata change durable (the flash store's commit). */
    private readonly commit: () => Promise<void>,
    /** Writes to every target pass it first (the writer lease), when given. */
    private readonly fence?: Fence,
  ) {
    this.byName.set('default', { name: 'default', url: defaultStore.description, store: this.fenced(defaultStore) });
    for (const row of meta.targets()) {
      if (openStore) this.byName.set(row.name, { name: row.name, url: row.url, store: this.fenced(openStore(row.url)) });
      else log.warn('target not opened (no opener given)', { target: row.name });
    }
  }

  private fenced(store: ObjectStore): ObjectStore {
    return this.fence ? new FencedObjectStore(store, this.fence) : store;
  }

  /** Every target, "default" first. */
  list(): Target[] {
    return [...this.byName.values()];
  }

  names(): string[] {
    return [...this.byName.keys()];
  }

  has(name: string): boolean {
    return this.byName.has(name);
  }

  /** A target by name, or undefined (a pack in a target this daemon cannot open waits). */
  find(name: string): Target | undefined {
    return this.byName.get(name);
  }

  /** A target by name; an unknown one is EIO-mapped (a pack in a target this daemon cannot open). */
  get(name: string): Target {
    const target = this.byName.get(name);
    if (!target) throw new TierfsError('IO', `object target ${name} is not open (recorded in the metadata, but not known to this daemon)`);
    return target;
  }

  /** The last failure talking to any target (cleared by the next success there). */
  get lastError(): string | undefined {
    for (const target of this.byName.values()) if (target.lastError !== undefined) return target.lastError;
    return undefined;
  }

  /**
   * Add a target (tierfs target add): the name and URL checked, a probe object
   * written, read back and deleted, then the target recorded.  Policies can
   * then send files there (their `target`).
   */
  async add(name: string, url: string): Promise<void> {
    if (!TARGET_NAME.test(name)) throw new TierfsError('USAGE', `target name ${JSON.stringify(name)}: letters, digits, _ . - (at most 64, starting with a letter or digit)`);
    if (this.byName.has(name)) throw new TierfsError('BUSY', `a target named ${name} exists`);
    if (!this.openStore) throw new TierfsError('INVALID', 'this daemon cannot open more targets');
    const store = this.openStore(url); // refuses a bad URL with one line
    const same = [...this.byName.values()].find((t) => t.url === store.description || t.url === url);
    if (same) {
      await store.close();
      throw new TierfsError('USAGE', `target ${same.name} is already ${url}: two targets must not share a place`);
    }
    const probe = await probeStore(store, this.fsUuid, () => this.clock.monotonicMs());
    if (!probe.ok) {
      await store.close();
      throw new TierfsError('USAGE', `target ${name}: cannot store objects at ${url}: ${probe.error}`);
    }
    this.meta.mutate(() => this.meta.putTarget(name, url, this.clock.nowMs()));
    await this.commit();
    this.byName.set(name, { name, url, store: this.fenced(store) });
    log.info('target added', { target: name, url: store.description });
  }

  /** Remove a target no policy names and no pack is in. */
  async remove(name: string): Promise<void> {
    if (name === 'default') throw new TierfsError('USAGE', 'the default target (the one given to format) cannot be removed');
    const target = this.byName.get(name);
    if (!target) throw new TierfsError('NOT_FOUND', `no target named ${name}`);
    const users = this.meta.policies().filter((p) => p.target === name);
    if (users.length > 0) throw new TierfsError('BUSY', `target ${name} is named by polic${users.length === 1 ? 'y' : 'ies'} ${users.map((p) => p.name).join(', ')}; change or remove them first`);
    const packs = this.meta.packsOfTarget(name);
    if (packs.count > 0) throw new TierfsError('BUSY', `target ${name} holds ${packs.count} pack(s), ${packs.storedBytes} bytes, that files still use`);
    this.meta.mutate(() => this.meta.deleteTarget(name));
    await this.commit();
    this.byName.delete(name);
    await target.store.close();
  }

  /** Write, read back and delete a probe object beside the packs of a target; each step timed. */
  test(name: string): Promise<ProbeReport> {
    const target = this.byName.get(name);
    if (!target) throw new TierfsError('NOT_FOUND', `no target named ${name} (tierfs target list)`);
    return probeStore(target.store, this.fsUuid, () => this.clock.monotonicMs());
  }

  /** Close the stores this set opened (the default one is its opener's). */
  async close(): Promise<void> {
    for (const target of this.byName.values()) if (target.name !== 'default') await target.store.close();
  }
}
