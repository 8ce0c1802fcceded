// A fault-injecting HTTP proxy on loopback, in front of s3rver or azurite: it
// forwards every request unchanged, except those a scripted fault matches, which
// get an error status with the service's own error body, a reset connection, a
// body cut short, or no answer at all.  Stopped at teardown, even when a test fails.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Test } from 'tap';

export type ProxyFault =
  | { kind: 'status'; status: number; code: string; method?: string; count: number }
  | { kind: 'reset' | 'truncate' | 'hang'; method?: string; count: number };

export interface FaultProxy {
  /** The proxy's base URL (http://127.0.0.1:PORT), to put in place of the server's. */
  origin: string;
  inject(fault: ProxyFault): void;
  /** Requests forwarded or answered so far. */
  requestCount: number;
}

/** Start a proxy to `upstream` (http://127.0.0.1:PORT); `service` chooses the error body's dialect. */
export async function startFaultProxy(t: Test, upstream: string, service: 's3' | 'azure'): Promise<FaultProxy> {
  const target = new URL(upstream);
  const faults: ProxyFault[] = [];
  const hung: http.ServerResponse[] = [];
  const proxy: FaultProxy = { origin: '', inject: (fault) => void faults.push({ ...fault }), requestCount: 0 };
  const server = http.createServer((req, res) => {
    proxy.requestCount += 1;
    const fault = faults.find((f) => f.count > 0 && (f.method === undefined || f.method === req.method));
    if (fault) fault.count -= 1;
    if (fault?.kind === 'status') {
      req.resume();
      const body =
        service === 's3'
          ? `<?xml version="1.0" encoding="UTF-8"?><Error><Code>${fault.code}</Code><Message>injected by the test proxy</Message></Error>`
          : `<?xml version="1.0" encoding="utf-8"?><Error><Code>${fault.code}</Code><Message>injected by the test proxy</Message></Error>`;
      res.writeHead(fault.status, { 'content-type': 'application/xml', 'content-length': Buffer.byteLength(body), ...(service === 'azure' ? { 'x-ms-error-code': fault.code } : {}) });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    if (fault?.kind === 'reset') {
      req.socket.destroy();
      return;
    }
    if (fault?.kind === 'hang') {
      req.resume();
      hung.push(res);
      return;
    }
    const forward = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers },
      (upstreamRes) => {
        if (fault?.kind === 'truncate') {
          // The headers promise the whole body; half of it comes, then the connection drops.
          res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
          const chunks: Buffer[] = [];
          upstreamRes.on('data', (chunk: Buffer) => chunks.push(chunk));
          upstreamRes.on('end', () => {
            const whole = Buffer.concat(chunks);
            res.write(whole.subarray(0, Math.floor(whole.length / 2)), () => res.socket?.destroy());
          });
          return;
        }
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.headers);
        upstreamRes.pipe(res);
      },
    );
    forward.on('error', () => res.socket?.destroy());
    req.pipe(forward);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  proxy.origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  t.teardown(
    () =>
      new Promise<void>((resolve) => {
        for (const res of hung) res.socket?.destroy();
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return proxy;
}
