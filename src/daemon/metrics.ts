/**
 * Prometheus metrics (prom-client), off by default.  When on, they are
 * served on a loopback address only (a scraper on the appliance, or an SSH
 * tunnel): the figures name paths and targets, and the endpoint has no
 * authentication.  Gauges and counters are read from the daemon's status
 * at scrape time; recall latency is a histogram fed by every recall GET.
 */
import http from 'node:http';
import net from 'node:net';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { TierfsError } from '../errors';
import { log } from '../log';
import { statusOf, type Service } from './admin';

/** "127.0.0.1:9464", "[::1]:9464" or "localhost:9464"; anything not loopback is refused. */
export function parseMetricsAddress(text: string, where: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(text);
  const host = match ? (match[1] ?? match[2]) : '';
  const port = match ? Number(match[3]) : NaN;
  if (!match || port < 1 || port > 65535) throw new TierfsError('USAGE', `${where}: "${text}" is not HOST:PORT (example: 127.0.0.1:9464)`);
  const loopback = host === 'localhost' || (net.isIPv4(host) && host.startsWith('127.')) || host === '::1';
  if (!loopback) throw new TierfsError('USAGE', `${where}: metrics are served on loopback only (127.0.0.1, ::1 or localhost), not ${host}`);
  return { host, port };
}

export interface MetricsServer {
  address: string;
  close(): Promise<void>;
}

export async function startMetricsServer(service: Service, address: { host: string; port: number }): Promise<MetricsServer> {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'tierfs_' });
  const gauge = (name: string, help: string, labelNames: string[] = []) => new Gauge({ name, help, labelNames, registers: [registry] });
  const flashCapacity = gauge('tierfs_flash_capacity_bytes', 'Capacity of the flash tier');
  const flashUsed = gauge('tierfs_flash_used_bytes', 'Bytes of the flash tier in use');
  const watermark = gauge('tierfs_flash_watermark_bytes', 'Watermarks of flash use', ['level']);
  const residency = gauge('tierfs_residency_bytes', 'File bytes by residency', ['residency']);
  const packs = gauge('tierfs_packs', 'Packs in the object tier');
  const packBytes = gauge('tierfs_pack_bytes', 'Bytes of packs in the object tier', ['kind']);
  const queue = gauge('tierfs_destage_queue_bytes', 'Bytes only on flash whose policy lets them go now');
  const reachable = gauge('tierfs_target_reachable', '1 when the last operation on the object target succeeded', ['target']);
  const inodes = gauge('tierfs_inodes', 'Inodes in the file system');
  const getsPerGiB = gauge('tierfs_recall_gets_per_gib', 'Recall GETs per GiB recalled since the daemon started (tierfs_recall_get_total over tierfs_recalled_bytes_total, scaled)');
  const prefetched = gauge('tierfs_recall_prefetched_bytes', 'Bytes fetched ahead of sequential readers and not read yet');
  const replicationLag = gauge('tierfs_metadata_replication_lag_seconds', 'How long the oldest committed metadata change not yet in the bucket has waited (0: all there)');
  const metadataPuts = gauge('tierfs_metadata_puts_last_hour', 'PUTs of metadata replication (log objects and snapshot parts) over the last hour');
  const retained = gauge('tierfs_retention_held_bytes', 'Bytes of dead packs kept in the bucket because a restore point still reads them');
  const writerRole = gauge('tierfs_writer', '1 while this appliance holds the writer lease and may write the bucket; 0 when read-only (a follower, or the role went to another appliance)');
  const followerApplied = gauge('tierfs_follower_applied_change', 'A follower: the last change of the writer\'s metadata log it applied');
  const followerCaughtUp = gauge('tierfs_follower_caught_up_seconds', 'A follower: since its last poll that found nothing newer (about the poll interval when it keeps up)');
  const lostFiles = gauge('tierfs_lost_files', 'Files whose newest data was only on a lost flash tier (tierfs lost)');
  const lostBytes = gauge('tierfs_lost_bytes', 'Bytes of those files that were lost');
  const shareCount = gauge('tierfs_shares', 'Network shares (tierfs share)');
  const nfsClients = gauge('tierfs_nfs_clients', 'NFS clients of the machine\'s NFS server (NFSv4 clients and NFSv3 mounts of the file system)');
  const smbClients = gauge('tierfs_smb_clients', 'SMB connections to the file system\'s shares');
  const counterNames = new Map<string, Counter>();
  const seen = new Map<string, number>();
  const counter = (key: string) => {
    const name = `tierfs_${key.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`).replace(/_count$/, '')}_total`;
    let c = counterNames.get(key);
    if (!c) counterNames.set(key, (c = new Counter({ name, help: `tierfs counter ${key}`, registers: [registry] })));
    return c;
  };
  const recallLatency = new Histogram({
    name: 'tierfs_recall_get_seconds',
    help: 'Latency of ranged GETs that recall data from the object tier',
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  if (service.tier) service.tier.onRecallLatency = (ms) => recallLatency.observe(ms / 1000);

  const refresh = () => {
    const status = statusOf(service, '');
    flashCapacity.set(status.flash.capacityBytes);
    flashUsed.set(status.flash.usedBytes);
    inodes.set(status.inodeCount);
    residency.set({ residency: 'flash' }, status.residency.flashOnlyBytes);
    residency.set({ residency: 'both' }, status.residency.bothBytes);
    residency.set({ residency: 'object' }, status.residency.objectOnlyBytes);
    if (service.tier) {
      watermark.set({ level: 'high' }, status.flash.highWatermarkBytes ?? 0);
      watermark.set({ level: 'low' }, status.flash.lowWatermarkBytes ?? 0);
      packs.set(status.packs.count);
      packBytes.set({ kind: 'stored' }, status.packs.storedBytes);
      packBytes.set({ kind: 'live' }, status.packs.liveBytes);
      packBytes.set({ kind: 'garbage' }, status.packs.garbageBytes);
      queue.set(status.destage?.queueBytes ?? 0);
      getsPerGiB.set(status.recall?.getsPerGiB ?? 0);
      prefetched.set(status.recall?.prefetchedBytes ?? 0);
      for (const target of status.targets) reachable.set({ target: target.name }, target.reachable ? 1 : 0);
    }
    if (status.replication) {
      replicationLag.set(status.replication.lagMs / 1000);
      metadataPuts.set(status.replication.putsLastHour);
      retained.set(status.replication.heldForRetentionBytes);
    }
    writerRole.set(status.writer?.state === 'held' && status.writer.readOnly === null ? 1 : 0);
    if (status.follower) {
      followerApplied.set(status.follower.appliedSeq);
      followerCaughtUp.set((status.follower.caughtUpAgoMs ?? 0) / 1000);
    }
    lostFiles.set(status.lost.fileCount);
    lostBytes.set(status.lost.bytes);
    shareCount.set(status.shares?.count ?? 0);
    nfsClients.set(status.shares?.nfs.clientCount ?? 0);
    smbClients.set(status.shares?.smb.clientCount ?? 0);
    for (const [key, value] of Object.entries(status.counters)) {
      if (key === 'foreignObjectCount') continue; // a gauge's figure (recounted at each listing), not a counter
      const delta = value - (seen.get(key) ?? 0);
      if (delta > 0) counter(key).inc(delta);
      seen.set(key, value);
    }
  };

  const server = http.createServer((request, response) => {
    if (request.url !== '/metrics' || request.method !== 'GET') {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('GET /metrics\n');
      return;
    }
    Promise.resolve()
      .then(() => {
        refresh();
        return registry.metrics();
      })
      .then(
        (text) => response.writeHead(200, { 'content-type': registry.contentType }).end(text),
        (error: unknown) => {
          log.error('metrics failed', { error: (error as Error).message });
          response.writeHead(500, { 'content-type': 'text/plain' }).end(`${(error as Error).message}\n`);
        },
      );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(new TierfsError('USAGE', `metrics on ${address.host}:${address.port}: ${error.code === 'EADDRINUSE' ? 'the port is in use' : error.message}`)),
    );
    server.listen(address.port, address.host, () => resolve());
  });
  const bound = server.address() as net.AddressInfo;
  const text = `${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`;
  log.info('metrics listening', { address: text });
  return {
    address: text,
    close: () =>
      new Promise<void>((resolve) => {
        if (service.tier) service.tier.onRecallLatency = undefined;
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
