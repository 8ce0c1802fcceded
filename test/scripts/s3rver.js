// Runs s3rver on 127.0.0.1 with a free port, one bucket, objects in argv[2]; prints "port N" when ready.
// Started under node --openssl-legacy-provider (else truncated listings answer 500).
const S3rver = require('s3rver');

const [directory, bucket] = process.argv.slice(2);
new S3rver({ port: 0, address: '127.0.0.1', directory, silent: true, configureBuckets: [{ name: bucket, configs: [] }] })
  .run()
  .then(({ port }) => process.stdout.write(`port ${port}\n`))
  .catch((error) => {
    process.stderr.write(`s3rver: ${error.message}\n`);
    process.exit(1);
  });
