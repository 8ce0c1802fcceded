/**
 * The tier layer as the layers above see it: object targets by URL, the
 * tiering engine, policies and the pack format.
 */
import { systemClock, type Clock } from '../clock';
import { constants } from '../constants';
import { openObjectStore, RetryingObjectStore } from './object_store';

export { TieringEngine, probeStore, defaultTieringOptions, type TieringOptions, type TierCounters, type FileResidency, type ProgressReport, type JobControl, yieldToEventLoop } from './tiering';
export { parseDuration, validatePolicy, policyModes, PolicySet, globToRegExp } from './policy';
export { describePack, packIdOfKey, packKey, packKeyPrefix, parseEncryptionKey } from './pack';
export { checkUploadConcurrency, checkWatermarks } from './policy';
export { defaultPrices, parsePrices, type Prices, type SimulationResult } from './simulate';
export * from './object_store';
export { defaultReplicationOptions, type ReplicationOptions, type ReplicationStatus } from './replication';

/** The object store of a target URL, with the standard retry policy around it (its waits on `clock`). */
export function openTarget(url: string, deadlineMs: number = constants.objectDeadlineMs, clock: Clock = systemClock): RetryingObjectStore {
  return new RetryingObjectStore(openObjectStore(url), {
    deadlineMs,
    attemptTimeoutMs: Math.min(constants.objectAttemptTimeoutMs, deadlineMs),
    baseDelayMs: constants.retryBaseDelayMs,
    delayMsMax: constants.retryDelayMsMax,
    clock: () => clock.nowMs(),
    sleep: (ms) => clock.sleep(ms),
    timeout: (ms) => clock.timeout(ms),
  });
}
