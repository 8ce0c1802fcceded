// The ObjectStore conformance suite against the file backend, s3rver and
// azurite (both started here on loopback), plus the retry and fault wrappers.
import t, { type Test } from 'tap';
import { FaultyObjectStore, ObjectStoreError, openObjectStore, parseTargetUrl, RetryingObjectStore, type ObjectStore } from '../src/tier/object_store';
import { AzureObjectStore } from '../src/tier/azure_object_store';
import { S3ObjectStore } from '../src/tier/s3_object_store';
import { startFaultProxy, type ProxyFault } from './helpers/fault_proxy';
import { SimulatedClock } from '../src/clock';
import { scratchDir } from './helpers/fs';
import { objectStoreConformance } from './helpers/object_store_conformance';
import { startAzurite, startS3rver, testBucket } from './helpers/servers';

/** The kind of the ObjectStoreError a promise rejects with ('resolved' if it does not). */
async function kindOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
    return 'resolved';
  } catch (error) {
    return error instanceof ObjectStoreError ? error.kind : `not an ObjectStoreError: ${String(error)}`;
  }
}

t.test('file backend', async (t) => {
  const store = openObjectStore(`file://${scratchDir(t)}`);
  await objectStoreConformance(t, store);
});

t.test('s3 backend on s3rver', async (t) => {
  const server = await startS3rver(t);
  const store = openObjectStore(server.url('conformance'));
  t.teardown(() => store.close());
  await objectStoreConformance(t, store, { conditional: false }); // s3rver stores whatever If-None-Match / If-Match say
});

t.test('azure backend on azurite', async (t) => {
  const server = await startAzurite(t);
  const store = openObjectStore(server.url('conformance'));
  t.teardown(() => store.close());
  await objectStoreConformance(t, store);
  // The same suite with staged blocks (stageBlock + commitBlockList) for everything above 1 MiB.
  const staged = new AzureObjectStore({ container: testBucket, prefix: 'staged', endpoint: server.endpoint, partSizeBytes: 1 << 20, partConcurrency: 3, singleShotBytesMax: 1 << 20 });
  t.test('staged blocks', async (t) => objectStoreConformance(t, staged, { manyKeys: 20 }));
});

t.test('target URLs: bad ones are refused with one clear line', async (t) => {
  const bad: [string, RegExp][] = [
    ['not a url', /is not a URL/],
    ['ftp://host/x', /scheme ftp: is not supported/],
    ['s3://key:secret@bucket/p', /credentials do not belong/],
    ['s3://bucket/p?endpiont=http://x', /parameter endpiont is not known/],
    ['s3://Bad_Bucket/p', /bucket name/],
    ['s3://bucket/p?endpoint=ftp://x', /endpoint must be http/],
    ['file://host/dir', /no host/],
    ['file:///', /absolute directory other than \//],
    ['azure://a/p', /container name/],
  ];
  for (const [url, message] of bad) t.throws(() => parseTargetUrl(url), { code: 'USAGE', message }, url);
  t.same(parseTargetUrl('s3://my-bucket/some/prefix/?endpoint=http://127.0.0.1:9000&region=eu-west-1'), {
    scheme: 's3', bucket: 'my-bucket', prefix: 'some/prefix', endpoint: 'http://127.0.0.1:9000', region: 'eu-west-1',
  });
  const saved = { ...process.env };
  delete process.env.AZURE_STORAGE_CONNECTION_STRING;
  delete process.env.AZURE_STORAGE_ACCOUNT;
  t.teardown(() => Object.assign(process.env, saved));
  t.throws(() => openObjectStore('azure://container/p'), { code: 'USAGE', message: /AZURE_STORAGE_CONNECTION_STRING/ });
});

t.test('retries: transient and throttled failures are retried with backoff, bounded by the deadline', async (t) => {
  const faulty = new FaultyObjectStore(openObjectStore(`file://${scratchDir(t)}`));
  let now = 0;
  const delays: number[] = [];
  const retrying = new RetryingObjectStore(faulty, {
    deadlineMs: 1000, attemptTimeoutMs: 500, baseDelayMs: 10, delayMsMax: 200,
    clock: () => now, random: () => 1,
    sleep: async (ms) => { delays.push(ms); now += ms; },
  });
  faulty.inject({ op: 'put', kind: 'fail', count: 2 });
  faulty.inject({ op: 'put', kind: 'throttle', count: 1 });
  await retrying.put('k', [Buffer.from('v')]);
  t.same(delays, [10, 20, 40], 'exponential backoff');
  t.match(retrying.counters, { retryCount: 3, throttledCount: 1, failedCount: 0 });
  t.equal((await retrying.get('k')).toString(), 'v');

  faulty.inject({ op: 'get', kind: 'auth', count: 1 });
  t.equal(await kindOf(retrying.get('k')), 'Auth', 'auth errors are not retried');
  t.equal(await kindOf(retrying.get('missing')), 'NotFound', 'neither is not-found');
  t.equal(retrying.counters.retryCount, 3, 'no retry for either');

  delays.length = 0;
  faulty.unreachable = true;
  await t.rejects(retrying.get('k'), { kind: 'Transient', message: /gave up after \d+ attempts/ });
  t.ok(now <= 2000 && delays.reduce((a, b) => a + b, 0) < 1000, 'within the deadline');
  t.ok(delays.every((d) => d <= 200), 'no delay above the cap');
});

t.test('retries: a hung attempt is cut by its timeout and retried', async (t) => {
  const faulty = new FaultyObjectStore(openObjectStore(`file://${scratchDir(t)}`));
  const clock = new SimulatedClock();
  const retrying = new RetryingObjectStore(faulty, {
    deadlineMs: 5000, attemptTimeoutMs: 100, baseDelayMs: 1, delayMsMax: 5,
    clock: () => clock.nowMs(), random: () => 1, sleep: (ms) => clock.sleep(ms), timeout: (ms) => clock.timeout(ms),
  });
  await retrying.put('k', [Buffer.from('v')]);
  faulty.inject({ op: 'get', kind: 'hang', count: 1 });
  let answer: string | undefined;
  void retrying.get('k').then((data) => (answer = data.toString()));
  await clock.advance(99);
  t.equal(answer, undefined, 'the hung attempt is waited for until its timeout');
  await clock.advance(1); // the attempt times out at 100 ms; the retry waits its backoff (1 ms)
  t.equal(answer, undefined, 'then the backoff');
  await clock.advance(1);
  // The second attempt reads a real file: its answer comes once the disk does (no more simulated time needed).
  for (const deadline = Date.now() + 10_000; answer === undefined && Date.now() < deadline; ) await new Promise((resolve) => setTimeout(resolve, 5));
  t.equal(answer, 'v', 'the second attempt answers, 101 ms of simulated time after the first began');
  t.equal(retrying.counters.retryCount, 1);
});

/**
 * What a failure of the service looks like to the engine: each fault injected
 * between the SDK and the real server (status with the service's own error
 * body, reset connection, body cut short, no answer) must come out as the
 * ObjectStoreError kind the retry policy and the engine act on.
 */
async function errorMapping(t: Test, store: ObjectStore, inject: (fault: ProxyFault) => void, codes: { throttled: string; notFound: string; denied: string }) {
  await store.put('present', [Buffer.alloc(64 * 1024, 7)]);
  const cases: [string, ProxyFault, () => Promise<unknown>, string][] = [
    ['503 throttling', { kind: 'status', status: 503, code: codes.throttled, count: 1 }, () => store.get('present'), 'Throttled'],
    ['500 internal error', { kind: 'status', status: 500, code: 'InternalError', count: 1 }, () => store.get('present'), 'Transient'],
    ['403 access denied', { kind: 'status', status: 403, code: codes.denied, count: 1 }, () => store.put('k', [Buffer.from('x')]), 'Auth'],
    ['404 on a get', { kind: 'status', status: 404, code: codes.notFound, count: 1 }, () => store.get('present'), 'NotFound'],
    ['a reset connection', { kind: 'reset', count: 1 }, () => store.get('present'), 'Transient'],
    ['a body cut short', { kind: 'truncate', method: 'GET', count: 1 }, () => store.get('present'), 'Transient'],
    ['no answer before the deadline', { kind: 'hang', count: 1 }, () => store.get('present', undefined, AbortSignal.timeout(300)), 'Transient'],
  ];
  for (const [what, fault, call, kind] of cases) {
    inject(fault);
    t.equal(await kindOf(call()), kind, `${what}: ${kind}`);
  }
  t.equal(await store.head('missing'), undefined, 'a missing object is undefined to head, through the proxy');
  t.ok((await store.get('present')).equals(Buffer.alloc(64 * 1024, 7)), 'and with no fault, the bytes come through');
}

t.test('s3: service failures map to the error kinds the engine acts on (faults in front of s3rver)', async (t) => {
  const server = await startS3rver(t);
  const proxy = await startFaultProxy(t, server.endpoint, 's3');
  const store = new S3ObjectStore({ bucket: testBucket, prefix: 'faults', endpoint: proxy.origin, region: 'us-east-1', partSizeBytes: 8 << 20, partConcurrency: 4 });
  t.teardown(() => store.close());
  await errorMapping(t, store, (fault) => proxy.inject(fault), { throttled: 'SlowDown', notFound: 'NoSuchKey', denied: 'AccessDenied' });
});

t.test('azure: service failures map to the error kinds the engine acts on (faults in front of azurite)', async (t) => {
  const server = await startAzurite(t);
  const upstream = new URL(server.endpoint);
  const proxy = await startFaultProxy(t, upstream.origin, 'azure');
  const store = new AzureObjectStore({ container: testBucket, prefix: 'faults', endpoint: `${proxy.origin}${upstream.pathname}`, partSizeBytes: 8 << 20, partConcurrency: 4 });
  t.teardown(() => store.close());
  await errorMapping(t, store, (fault) => proxy.inject(fault), { throttled: 'ServerBusy', notFound: 'BlobNotFound', denied: 'AuthenticationFailed' });
});
