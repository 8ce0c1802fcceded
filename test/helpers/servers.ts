// Loopback object servers for tests, stopped by PID at teardown even when a test fails.
import 'tap';

type Test = tap.Test;
import { scratchDir } from './fs';
import { startAzuriteProcess, startS3rverProcess, type ObjectServer } from './object_servers';

export { testBucket, freePort, type ObjectServer as Server } from './object_servers';

export function startS3rver(t: Test): Promise<ObjectServer> {
  return startS3rverProcess(scratchDir(t, 'tierfs-s3rver-'), (stop) => t.teardown(stop));
}

export function startAzurite(t: Test): Promise<ObjectServer> {
  return startAzuriteProcess((stop) => t.teardown(stop));
}
